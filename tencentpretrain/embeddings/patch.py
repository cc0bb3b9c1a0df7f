"""Image patch embedding (config ``embedding: ["patch", "pos"]``), the Vision Transformer's input.

A Conv2d with kernel = stride = ``patch_size`` cuts an image (B, C, H, W) into (H/p)*(W/p) patch vectors, and
a learned [CLS] vector is put in front, so the sequence has 1 + (H/p)*(W/p) tokens (``max_seq_length`` must be
at least that, for the ``pos`` table). State keys ``embedding.patch.cls_emb`` (1, 1, E) and
``embedding.patch.projection.{weight,bias}``. The original's module had no projection bias while its HF
converter wrote one (which its non-strict loading then dropped); here the bias exists, so HF ViT weights load
exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.registry import EMBEDDINGS


@EMBEDDINGS.register("patch")
class PatchEmbedding(nn.Module):
    """Images -> [CLS] + patch vectors."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        p = config.patch_size
        if config.image_height % p or config.image_width % p:
            raise ConfigError(
                f"image {config.image_height}x{config.image_width} is not divisible into {p}x{p} patches"
            )
        self.image_size = (config.image_height, config.image_width)
        self.patches_num = (config.image_height // p) * (config.image_width // p)
        if "pos" in config.embedding and config.max_seq_length < self.patches_num + 1:
            raise ConfigError(
                f"max_seq_length={config.max_seq_length} is smaller than the {self.patches_num + 1} tokens of an "
                "image (patches + [CLS])"
            )
        self.cls_emb = nn.Parameter(torch.zeros(1, 1, config.emb_size))
        self.projection = nn.Conv2d(config.channels_num, config.emb_size, kernel_size=p, stride=p)

    def sequence_length(self, src: torch.Tensor) -> int:
        """Tokens produced for a batch of images: the patches and [CLS]."""
        return self.patches_num + 1

    def forward(self, src: torch.Tensor, seg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """src: (B, C, H, W) float images -> (B, 1 + P, E)."""
        if tuple(src.shape[-2:]) != self.image_size:
            raise ValueError(f"image size {tuple(src.shape[-2:])} does not match the model's {self.image_size}")
        patches = self.projection(src).flatten(2).transpose(1, 2)  # (B, P, E)
        cls = self.cls_emb.expand(src.shape[0], -1, -1)  # (B, 1, E)
        return torch.cat((cls, patches), dim=1)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.cls_emb, std=0.02)
