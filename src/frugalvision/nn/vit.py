"""Small Vision Transformers built from timm's VisionTransformer (one code path for tiny and paper sizes)."""

from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer


def small_vit(
    img_size: int = 28,
    patch_size: int = 7,
    in_chans: int = 1,
    num_classes: int = 10,
    embed_dim: int = 64,
    depth: int = 4,
    num_heads: int = 4,
    mlp_ratio: float = 4.0,
    drop_path_rate: float = 0.0,
    init_values: float | None = None,
    class_token_position: bool = True,
) -> VisionTransformer:
    """A timm ViT sized for small images (default: 28 px, patch 7 -> 16 tokens + CLS, width 64, ~0.2 M params).

    Args:
        img_size: input resolution.
        patch_size: patch size (img_size must be a multiple).
        in_chans: input channels.
        num_classes: classes of the head.
        embed_dim: token width.
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / embed_dim.
        drop_path_rate: stochastic-depth rate (timm's linear ramp).
        init_values: LayerScale init (None disables LayerScale).
        class_token_position: if False, the class token carries no position embedding (DeiT III style).
    """
    return VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        drop_path_rate=drop_path_rate,
        init_values=init_values,
        no_embed_class=not class_token_position,
    )
