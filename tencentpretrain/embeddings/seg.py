"""Segment embedding (config ``embedding: [..., "seg"]``), BERT's sentence A/B ids."""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.registry import EMBEDDINGS

SEGMENTS_NUM = 3  # 0 = padding, 1 = first segment, 2 = second segment


@EMBEDDINGS.register("seg")
class SegmentEmbedding(nn.Module):
    """Segment ids -> vectors. State key: ``embedding.seg.embedding.weight`` (3, E)."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(SEGMENTS_NUM, config.emb_size)

    def forward(self, src: torch.Tensor, seg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """seg (B, T) -> (B, T, E)."""
        return self.embedding(seg)
