"""The two-stream encoder (config ``encoder: "dual"`` with ``embedding: ["dual"]``): each stream's registered
encoder, built from the stream's config (``ModelConfig.streams``); one module under both names with
``tie_weights: true`` (as the original). State keys ``encoder.encoder_{0,1}.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.registry import ENCODERS

Pair = tuple[torch.Tensor, torch.Tensor]


@ENCODERS.register("dual")
class DualEncoder(nn.Module):
    """``encoder_0`` and ``encoder_1``; pairs in, pairs out."""

    uses_attention = False  # the streams check their own (each is a validated ModelConfig)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        first, second = config.streams
        self.encoder_0 = ENCODERS.get(first.encoder)(first)
        self.encoder_1 = self.encoder_0 if config.tie_weights else ENCODERS.get(second.encoder)(second)

    def encode(self, stream: int, emb: torch.Tensor, seg: torch.Tensor, *, positions: torch.Tensor,
               honor_padding: bool = True) -> torch.Tensor:
        """One stream: emb (B, T, E), seg (B, T) -> (B, T, H)."""
        encoder = getattr(self, f"encoder_{stream}")
        return encoder(emb, seg, positions=positions, honor_padding=honor_padding)

    def forward(self, emb: Pair, seg: Pair, *, positions: Pair, cache: object = None, honor_padding: bool = True,
                skip_padding: bool = False) -> Pair:
        """Pairs of emb (B, T_i, E), seg and positions (B, T_i) -> pair of (B, T_i, H)."""
        if cache is not None:
            raise ConfigError("the dual encoder has no KV cache")
        return tuple(self.encode(i, emb[i], seg[i], positions=positions[i], honor_padding=honor_padding)
                     for i in (0, 1))
