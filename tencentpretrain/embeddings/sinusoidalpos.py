"""Fixed sine/cosine position encoding (config ``embedding: [..., "sinusoidalpos"]``): the original's
Transformer (models/transformer/) and Pegasus configs.

The table is the original's: row p holds sin(p * w_k) at even columns and cos(p * w_k) at odd ones, with
w_k = exp(-k * ln(10000) / (E/2 - 1)) for k < E/2 (an odd E gets a zero last column). As in the original (and
fairseq, whose layout it follows), position i of a sequence reads row i + 2, and padding (segment 0) gets zeros.
The rows are computed from the positions in each forward (no parameters and no buffer: no state key, as in
the original's checkpoints, and nothing to materialise after building on the meta device).

Two departures, both where the original's result depended on something other than the position: it filled
the first ``seg.sum()`` slots of each row (wrong when segment ids are 2) and zeroed the table row whose index is
the [PAD] token's id; here every real token gets the row of its own position, and no row is zeroed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.registry import EMBEDDINGS

POSITION_OFFSET = 2  # position i reads row i + 2 (fairseq's padding_idx + 1 convention, kept by the original)


def sinusoidal_rows(rows: torch.Tensor, width: int) -> torch.Tensor:
    """Table rows (any shape of integer row indices) -> (..., width) float32: sin at even columns, cos at odd."""
    half = width // 2
    rate = math.log(10000) / (half - 1) if half > 1 else 0.0
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32, device=rows.device) * -rate)  # (half,)
    angles = rows.to(torch.float32).unsqueeze(-1) * frequencies  # (..., half)
    out = torch.zeros(*rows.shape, width, device=rows.device)
    out[..., 0 : 2 * half : 2] = torch.sin(angles)
    out[..., 1 : 2 * half : 2] = torch.cos(angles)
    return out


@EMBEDDINGS.register("sinusoidalpos")
class SinusoidalPositionEmbedding(nn.Module):
    """Positions -> fixed vectors; ``max_seq_length - 2`` positions fit."""

    scales_word_embedding = True  # the word vectors are multiplied by sqrt(emb_size) (see WordEmbedding)

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.max_seq_length = config.max_seq_length
        self.emb_size = config.emb_size

    def forward(self, src: torch.Tensor, seg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """positions, seg (B, T) -> (B, T, E), zeros where seg is 0."""
        if positions.numel() and int(positions.max()) + POSITION_OFFSET >= self.max_seq_length:
            raise ValueError(f"position {int(positions.max())} is past the sinusoidal table of max_seq_length="
                             f"{self.max_seq_length} (it holds positions < max_seq_length - {POSITION_OFFSET})")
        emb = sinusoidal_rows(positions + POSITION_OFFSET, self.emb_size)  # (B, T, E) float32
        return emb * (seg > 0).unsqueeze(-1)
