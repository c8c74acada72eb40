"""Collectives a method's loss may need, usable without touching Fabric (identity in a single process)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world_size() -> tuple[int, int]:
    """Return (global rank, number of processes); (0, 1) when no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient of the gathered tensor and returns this rank's slice."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        rank, world_size = rank_and_world_size()
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        slices = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(slices, tensor.contiguous())
        return torch.cat(slices)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 in rank order, differentiably.

    Every rank computes the same global-batch loss from the gathered tensor; the backward pass sums the ranks'
    gradients for each slice, so after DDP's gradient averaging the update equals that of one process holding the
    whole global batch.

    Args:
        tensor: this rank's tensor; every rank must pass the same shape.

    Returns:
        ``[world_size * N, ...]``; ``tensor`` itself when not distributed.
    """
    if rank_and_world_size()[1] == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_global_batch(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's per-sample tensors, differentiably, in the order of the global batch the sampler dealt out.

    :class:`~frugalvision.engine.GlobalBatchSampler` gives rank r the items ``r, r + W, r + 2W, ...`` of each global
    batch (W processes) and :func:`all_gather_with_grad` concatenates the ranks' slices in rank order; interleaving
    them back restores the global order, so order-dependent losses equal their single-process values. Identity in
    one process.
    """
    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return tensors
    gathered = (all_gather_with_grad(t).view(world_size, *t.shape) for t in tensors)
    return tuple(g.transpose(0, 1).reshape(-1, *g.shape[2:]) for g in gathered)
