"""T5 relative position buckets (config ``relative_position_embedding: true``).

A learned scalar per (bucket, head) is added to the attention scores. The relative distance ``key - query``
falls into one of ``buckets_num`` buckets: half of them (in the bidirectional encoder) hold the sign, small
distances get a bucket each, larger ones share logarithmically wider buckets up to ``max_distance``.
The bias is computed once per forward by the encoder or decoder, combined with the boolean visibility mask
into one float additive mask, and handed to every layer as its attention mask; attention itself stays
unaware of it. State key: ``relative_attention_bias.weight`` (buckets_num, heads_num), under
``encoder.relative_pos_emb`` and ``decoder.self_pos_emb`` as in the original.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_position_bucket(
    relative_position: torch.Tensor, *, bidirectional: bool, buckets_num: int, max_distance: int
) -> torch.Tensor:
    """Bucket index of each ``key - query`` distance (any integer shape -> same shape, long)."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        buckets_num //= 2
        buckets = buckets + (relative_position > 0).long() * buckets_num
        distance = relative_position.abs()
    else:
        distance = -torch.clamp(relative_position, max=0)  # only the past is visible to a causal decoder
    exact = buckets_num // 2
    is_small = distance < exact
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = exact + (log_ratio * (buckets_num - exact)).long()
    large = torch.clamp(large, max=buckets_num - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositionEmbedding(nn.Module):
    """Learned per-head bias of bucketed relative positions."""

    def __init__(self, *, heads_num: int, buckets_num: int, bidirectional: bool, max_distance: int = 128) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.buckets_num = buckets_num
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(buckets_num, heads_num)

    def forward(self, query_length: int, key_length: int, query_start: int = 0) -> torch.Tensor:
        """Bias (1, heads, T, S) for queries at slots ``query_start + [0, T)`` and keys at ``[0, S)``."""
        device = self.relative_attention_bias.weight.device
        query = torch.arange(query_start, query_start + query_length, device=device)[:, None]  # (T, 1)
        key = torch.arange(key_length, device=device)[None, :]  # (1, S)
        buckets = relative_position_bucket(
            key - query, bidirectional=self.bidirectional, buckets_num=self.buckets_num,
            max_distance=self.max_distance,
        )  # (T, S)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, h, T, S)

    def additive_mask(self, visible: torch.Tensor, query_start: int = 0) -> torch.Tensor:
        """Fold the bias into a boolean mask (B, 1, T, S), True = visible -> float mask (B, h, T, S)."""
        bias = self(visible.shape[-2], visible.shape[-1], query_start)
        blocked = torch.zeros(visible.shape, dtype=bias.dtype, device=bias.device)
        blocked.masked_fill_(~visible, torch.finfo(bias.dtype).min)
        return bias + blocked
