"""Batch normalisation over the global batch of a distributed run, on any device (CPU/gloo included).

``torch.nn.SyncBatchNorm`` runs on CUDA only; :class:`GlobalBatchNorm` computes the same statistics with two
differentiable all-reduces (the global mean, then the global variance around it), so that N processes normalise each
sample exactly as one process holding the whole global batch would. :func:`convert_sync_batchnorm` swaps every
BatchNorm of a model for the CUDA kernel on CUDA and for :class:`GlobalBatchNorm` elsewhere; outside a distributed
run both behave as plain BatchNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from frugalvision.engine.distributed import rank_and_world_size

__all__ = ["GlobalBatchNorm", "convert_sync_batchnorm", "has_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the ranks' gradients (every rank's output depends on every input)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm (any input rank >= 2) whose training statistics cover every process's batch.

    The state dict equals that of ``nn.BatchNorm{1,2,3}d``; in eval mode, or in one process, the forward is exactly
    ``F.batch_norm``. Every rank must call it with the same number of channels (batch sizes may differ).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions, got {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise with the global batch's statistics (training, several processes), else as plain BatchNorm."""
        self._check_input_dim(input)
        world_size = rank_and_world_size()[1]
        if not self.training or world_size == 1:
            return super().forward(input)
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        dims = [0, *range(2, x.dim())]
        shape = (1, -1, *[1] * (x.dim() - 2))
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        total = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            self._update_running(mean.detach(), var.detach() * n.detach() / (n.detach() - 1).clamp(min=1))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)

    def _update_running(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        assert self.running_mean is not None and self.running_var is not None
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        if self.momentum is None:
            momentum = 1.0 / float(self.num_batches_tracked)
        else:
            momentum = self.momentum
        with torch.no_grad():
            self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
            self.running_var.mul_(1 - momentum).add_(unbiased_var.to(self.running_var.dtype), alpha=momentum)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether any submodule is a BatchNorm (of any kind)."""
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def _converted(module: _BatchNorm, cuda: bool) -> nn.Module:
    kind = nn.SyncBatchNorm if cuda else GlobalBatchNorm
    if type(module) is kind:
        return module
    new = kind(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    if module.affine:
        with torch.no_grad():
            new.weight = module.weight
            new.bias = module.bias
    new.running_mean = module.running_mean
    new.running_var = module.running_var
    new.num_batches_tracked = module.num_batches_tracked
    new.train(module.training)
    return new


def convert_sync_batchnorm(model: nn.Module, cuda: bool | None = None) -> nn.Module:
    """Replace every BatchNorm of ``model`` (in place; the root is returned) by one over the global batch.

    Args:
        model: the model.
        cuda: use ``nn.SyncBatchNorm`` (CUDA kernels); default: whether the model's parameters are on CUDA.

    Returns:
        The model (a new object only when the model itself is a BatchNorm). Parameters and buffers are shared.
    """
    if cuda is None:
        cuda = any(p.is_cuda for p in model.parameters())
    if isinstance(model, _BatchNorm):
        return _converted(model, cuda)
    for name, child in model.named_children():
        model.add_module(name, convert_sync_batchnorm(child, cuda))
    return model
