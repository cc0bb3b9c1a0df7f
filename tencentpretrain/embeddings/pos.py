"""Learned absolute position embedding (config ``embedding: [..., "pos"]``), GPT-2 and BERT."""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.registry import EMBEDDINGS


@EMBEDDINGS.register("pos")
class PositionEmbedding(nn.Module):
    """Positions -> vectors; a table of ``max_seq_length`` rows. State key: ``embedding.pos.embedding.weight``."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.max_seq_length = config.max_seq_length
        self.embedding = nn.Embedding(config.max_seq_length, config.emb_size)

    def forward(self, src: torch.Tensor, seg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """positions (B, T) -> (B, T, E)."""
        return self.embedding(positions)
