"""Fixed sine/cosine positions as transformers' Pegasus (and Marian) compute them (config ``embedding: [...,
"pegasus_sinusoidalpos"]``): the table of HF Pegasus checkpoints, which differs from the original's
``sinusoidalpos`` in three ways.

Row p holds sin(p * w_m) in its first ceil(E/2) columns and cos(p * w_m) in the rest, with w_m = 10000^(-2m/E)
(computed in float64, as transformers does, then rounded to float32); position i reads row i (no offset). The
original's ``sinusoidalpos`` interleaves sin and cos, uses w_k = exp(-k ln(10000) / (E/2 - 1)) and reads row i + 2.
As with ``sinusoidalpos``, the word vectors are scaled by sqrt(emb_size) (HF's ``scale_embedding``) and there is
no state key: the rows are computed from the positions.
"""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.registry import EMBEDDINGS


def pegasus_sinusoidal_rows(positions: torch.Tensor, width: int) -> torch.Tensor:
    """Integer positions (any shape) -> (..., width) float32: sin in the first ceil(width / 2) columns, cos after."""
    sin_columns = (width + 1) // 2
    exponents = 2 * torch.arange(sin_columns, dtype=torch.float64, device=positions.device) / width
    angles = positions.to(torch.float64).unsqueeze(-1) / torch.pow(10000.0, exponents)  # (..., ceil(width / 2))
    return torch.cat([torch.sin(angles), torch.cos(angles[..., : width // 2])], dim=-1).to(torch.float32)


@EMBEDDINGS.register("pegasus_sinusoidalpos")
class PegasusSinusoidalPositionEmbedding(nn.Module):
    """Positions -> HF Pegasus's fixed vectors; ``max_seq_length`` positions fit (HF's max_position_embeddings)."""

    scales_word_embedding = True  # the word vectors are multiplied by sqrt(emb_size), as with sinusoidalpos

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.max_seq_length = config.max_seq_length
        self.emb_size = config.emb_size

    def forward(self, src: torch.Tensor, seg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """positions (B, T) -> (B, T, E) float32."""
        if positions.numel() and int(positions.max()) >= self.max_seq_length:
            raise ValueError(f"position {int(positions.max())} is past the table of max_seq_length="
                             f"{self.max_seq_length}")
        return pegasus_sinusoidal_rows(positions, self.emb_size)
