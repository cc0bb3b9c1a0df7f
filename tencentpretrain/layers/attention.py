"""Multi-head attention with grouped-query heads, on ``torch.nn.functional.scaled_dot_product_attention``.

Parameter names reproduce TencentPretrain's: ``linear_layers.{0,1,2}`` are Q, K, V and ``final_linear`` is O.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.layers.kv_cache import KVCache
from tencentpretrain.layers.rope import apply_rotary_emb


class MultiHeadedAttention(nn.Module):
    """Self-attention (or cross-attention) with ``kv_heads_num`` key/value heads shared by groups of query heads."""

    def __init__(
        self,
        hidden_size: int,
        heads_num: int,
        head_size: int,
        *,
        kv_heads_num: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        with_scale: bool = True,
    ) -> None:
        super().__init__()
        self.heads_num = heads_num
        self.kv_heads_num = kv_heads_num or heads_num
        self.head_size = head_size
        self.dropout = dropout
        self.scale = 1.0 / math.sqrt(head_size) if with_scale else 1.0
        self.linear_layers = nn.ModuleList(
            [
                nn.Linear(hidden_size, heads_num * head_size, bias=bias),  # Q
                nn.Linear(hidden_size, self.kv_heads_num * head_size, bias=bias),  # K
                nn.Linear(hidden_size, self.kv_heads_num * head_size, bias=bias),  # V
            ]
        )
        self.final_linear = nn.Linear(heads_num * head_size, hidden_size, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key_value: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        layer_index: int = 0,
    ) -> torch.Tensor:
        """Attend from ``query`` (B, T, H) to ``key_value`` (B, S, H; default: ``query``).

        Args:
            mask: (B, 1, T, S) bool, True = visible; or a float additive mask (B, 1 or heads, T, S) that may carry
                a position bias (T5); None means plain causal attention (no padding, no cache).
            rope: (cos, sin) of ``rope_cos_sin`` for the query positions, or None without rotary embeddings.
            cache: when given, the new keys/values are written to it and attention covers all cached slots.
        Returns:
            (B, T, H)
        """
        batch, length, _ = query.shape
        key_value = query if key_value is None else key_value
        q_proj, k_proj, v_proj = self.linear_layers
        q = q_proj(query).view(batch, length, self.heads_num, self.head_size)  # (B, T, h, D)
        k = k_proj(key_value).view(batch, key_value.shape[1], self.kv_heads_num, self.head_size)  # (B, S, kv, D)
        v = v_proj(key_value).view(batch, key_value.shape[1], self.kv_heads_num, self.head_size)
        if rope is not None:
            q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, len, D)
        if cache is not None:
            k, v = cache.write(layer_index, k, v)  # (B, kv, S_total, D)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None,
            scale=self.scale,
            enable_gqa=self.kv_heads_num != self.heads_num,
        )  # (B, h, T, D)
        out = out.transpose(1, 2).reshape(batch, length, self.heads_num * self.head_size)  # (B, T, h*D)
        return self.final_linear(out)
