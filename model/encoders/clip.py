"""CLIP image and text transformers (open_clip's architecture), cut into towers for the adapters.

The modules are open_clip's own ``VisionTransformer`` and ``TextTransformer`` built from a config
with no pretrained weights; the official CLIP checkpoint is loaded into them by
:mod:`model.encoders.checkpoints`. This file only says where each tower is cut:

- stem: patch/token embedding, class token, positional embedding (and ``ln_pre`` for images);
- block i: ``y = x + attn(ln_1 x)``, ``h = ln_2 y``, returns ``(y + mlp(h), h)``: the expert reads
  the same normalised tensor as the feed-forward layer it runs parallel to;
- head: final norm, pooling (class token / end-of-text token) and projection.
"""

from __future__ import annotations

import torch
from open_clip.transformer import ResidualAttentionBlock, TextTransformer, VisionTransformer, text_global_pool
from torch import nn

from model.config import TextTowerConfig, VisionTowerConfig
from model.experts import ExpertFactory, RouterConfig
from model.towers import Tower


class CLIPBlock(nn.Module):
    """One frozen pre-norm transformer block that also returns the FFN input for the adapter."""

    def __init__(self, block: ResidualAttentionBlock, causal: bool) -> None:
        super().__init__()
        self.block = block
        self.causal = causal

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.block
        mask = None
        if self.causal:
            n = x.shape[1]
            mask = torch.full((n, n), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        y = x + b.ls_1(b.attention(q_x=b.ln_1(x), attn_mask=mask))  # (B, N, D)
        h = b.ln_2(y)  # (B, N, D)
        return y + b.ls_2(b.mlp(h)), h


class ImageStem(nn.Module):
    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.conv1 = vit.conv1
        self.class_embedding = vit.class_embedding
        self.positional_embedding = vit.positional_embedding
        self.ln_pre = vit.ln_pre

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = self.conv1(images)  # (B, D, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, D)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (B, 1+g*g, D)
        return self.ln_pre(x), None


class ImageHead(nn.Module):
    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.ln_post = vit.ln_post
        self.proj = vit.proj

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        feature: torch.Tensor = self.ln_post(x[:, 0]) @ self.proj  # (B, E)
        return feature

    def tokens(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        """The patch tokens, normalised and projected like the class token: ``(B, P, E)``."""
        patches: torch.Tensor = self.ln_post(x[:, 1:]) @ self.proj
        return patches


class TextStem(nn.Module):
    def __init__(self, text: TextTransformer) -> None:
        super().__init__()
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]  # (B, L, D)
        return x, tokens


class TextHead(nn.Module):
    def __init__(self, text: TextTransformer) -> None:
        super().__init__()
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        pooled = text_global_pool(self.ln_final(x), ctx, pool_type="argmax")  # (B, D) at end-of-text
        feature: torch.Tensor = pooled @ self.text_projection  # (B, E)
        return feature


def build_vision_transformer(cfg: VisionTowerConfig, embed_dim: int) -> VisionTransformer:
    return VisionTransformer(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        width=cfg.width,
        layers=cfg.layers,
        heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
        output_dim=embed_dim,
        act_layer=nn.GELU if not cfg.quick_gelu else _QuickGELU,
    )


def build_text_transformer(cfg: TextTowerConfig, embed_dim: int) -> TextTransformer:
    return TextTransformer(
        context_length=cfg.context_length,
        vocab_size=cfg.vocab_size,
        width=cfg.width,
        heads=cfg.heads,
        layers=cfg.layers,
        output_dim=embed_dim,
        act_layer=nn.GELU if not cfg.quick_gelu else _QuickGELU,
    )


class _QuickGELU(nn.Module):
    """The GELU approximation the official OpenAI CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def image_tower(vit: VisionTransformer, expert_factory: ExpertFactory, router: RouterConfig) -> Tower:
    blocks = [CLIPBlock(b, causal=False) for b in vit.transformer.resblocks]
    width = vit.conv1.out_channels
    return Tower(ImageStem(vit), blocks, ImageHead(vit), adapter_width=width,
                 output_dim=vit.proj.shape[1], expert_factory=expert_factory, router=router)


def text_tower(text: TextTransformer, expert_factory: ExpertFactory, router: RouterConfig) -> Tower:
    blocks = [CLIPBlock(b, causal=True) for b in text.transformer.resblocks]
    width = text.token_embedding.embedding_dim
    return Tower(TextStem(text), blocks, TextHead(text), adapter_width=width,
                 output_dim=text.text_projection.shape[1], expert_factory=expert_factory, router=router)
