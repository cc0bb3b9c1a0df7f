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
from tencentpretrain.layers.stacked_linear import stacked_linear


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
        self.qkv: nn.Linear | None = None  # set by fuse_qkv_ (inference)

    def fuse_qkv_(self) -> None:
        """For inference: replace the Q, K and V linears by one whose weight stacks theirs, so self-attention
        makes one matrix product instead of three. Parameter names change (``qkv``): fuse after loading."""
        fused = stacked_linear(list(self.linear_layers))
        del self.linear_layers
        self.qkv = fused

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
            rope: rotations of ``rope_rotations`` for the query positions, or None without rotary embeddings.
            cache: when given, the new keys/values are written to it and attention covers all cached slots.
        Returns:
            (B, T, H)
        """
        batch, length, _ = query.shape
        if self.qkv is not None:
            q, k, v = self._fused_projections(query, key_value, rope)
        else:
            key_value = query if key_value is None else key_value
            q_proj, k_proj, v_proj = self.linear_layers
            q = q_proj(query).view(batch, length, self.heads_num, self.head_size)  # (B, T, h, D)
            k = k_proj(key_value).view(batch, key_value.shape[1], self.kv_heads_num, self.head_size)  # (B, S, kv, D)
            v = v_proj(key_value).view(batch, key_value.shape[1], self.kv_heads_num, self.head_size)
            if rope is not None:
                q, k = apply_rotary_emb(q, rope), apply_rotary_emb(k, rope)
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

    def _fused_projections(
        self, query: torch.Tensor, key_value: torch.Tensor | None, rope: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V (B, T, heads, D) from the fused linear, Q and K rotated together."""
        if key_value is not None and key_value is not query:
            raise ValueError("a fused QKV projection is for self-attention only")
        batch, length, _ = query.shape
        h, kv = self.heads_num, self.kv_heads_num
        qkv = self.qkv(query).view(batch, length, h + 2 * kv, self.head_size)  # (B, T, h + 2kv, D)
        qk, v = qkv[:, :, : h + kv], qkv[:, :, h + kv :]
        if rope is not None:
            qk = apply_rotary_emb(qk, rope)
        q, k = qk.split([h, kv], dim=2)
        return q, k, v

