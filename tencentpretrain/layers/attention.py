"""Multi-head attention with grouped-query heads, on ``torch.nn.functional.scaled_dot_product_attention``.

Parameter names reproduce TencentPretrain's: ``linear_layers.{0,1,2}`` are Q, K, V and ``final_linear`` is O.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.layers.dropout import dropout, fast_masks_apply
from tencentpretrain.layers.kv_cache import KVCache
from tencentpretrain.layers.packing import Packing
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
        qkv_bias: bool | None = None,
        with_scale: bool = True,
    ) -> None:
        """``bias`` is for all four linears; ``qkv_bias`` (None: as ``bias``) overrides it for Q, K and V alone
        (Qwen2: biases on Q, K, V and none on O)."""
        super().__init__()
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.heads_num = heads_num
        self.kv_heads_num = kv_heads_num or heads_num
        self.head_size = head_size
        self.dropout = dropout
        self.scale = 1.0 / math.sqrt(head_size) if with_scale else 1.0
        self.linear_layers = nn.ModuleList(
            [
                nn.Linear(hidden_size, heads_num * head_size, bias=qkv_bias),  # Q
                nn.Linear(hidden_size, self.kv_heads_num * head_size, bias=qkv_bias),  # K
                nn.Linear(hidden_size, self.kv_heads_num * head_size, bias=qkv_bias),  # V
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
        packing: Packing | None = None,
    ) -> torch.Tensor:
        """Attend from ``query`` (B, T, H) to ``key_value`` (B, S, H; default: ``query``).

        Args:
            mask: (B, 1, T, S) bool, True = visible; or a float additive mask (B, 1 or heads, T, S) that may carry
                a position bias (T5); None means plain causal attention (no padding, no cache) for self-attention,
                and every key visible for cross-attention (``key_value`` given).
            rope: rotations of ``rope_rotations`` for the query positions, or None without rotary embeddings.
            cache: when given, the new keys/values are written to it and attention covers all cached slots.
            packing: self-attention over the real tokens only: ``query`` is then (N, H), the packed rows of a
                (B, T) batch, and so is the result; ``mask`` still hides the padding keys.
        Returns:
            (B, T, H), or (N, H) with ``packing``
        """
        if packing is not None and key_value is not None:
            raise ValueError("packing is for self-attention only")
        causal = mask is None and (key_value is None or key_value is query)
        if self.qkv is not None:
            q, k, v = self._fused_projections(query, key_value, rope, packing)
        elif packing is not None:
            q, k, v = (self._heads(packing.unpack(proj(query))) for proj in self.linear_layers)  # (B, T, h|kv, D)
            if rope is not None:
                q, k = apply_rotary_emb(q, rope), apply_rotary_emb(k, rope)
        else:
            key_value = query if key_value is None else key_value
            q_proj, k_proj, v_proj = self.linear_layers
            q = self._heads(q_proj(query))  # (B, T, h, D)
            k, v = self._heads(k_proj(key_value)), self._heads(v_proj(key_value))  # (B, S, kv, D)
            if rope is not None:
                q, k = apply_rotary_emb(q, rope), apply_rotary_emb(k, rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, len, D)
        if cache is not None:
            k, v = cache.write(layer_index, k, v)  # (B, kv, S_total, D)
        if fast_masks_apply(q, self.dropout, self.training):
            out = self._attend_with_dropout(q, k, v, mask, causal=causal)
        else:
            out = self._sdpa(q, k, v, mask, causal)  # (B, h, T, D)
        batch, length = out.shape[0], out.shape[2]
        out = out.transpose(1, 2).reshape(batch, length, self.heads_num * self.head_size)  # (B, T, h*D)
        return self.final_linear(out if packing is None else packing.pack(out))

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              causal: bool) -> torch.Tensor:
        """scaled_dot_product_attention of q (B, h, T, D) over k/v (B, kv, S, D), arranged so that grouped-query
        attention with a mask can take a fused kernel: SDPA's flash kernel takes no mask and its memory-efficient
        one no unequal head counts, so a masked GQA call would fall to the math kernel.

        - One query per row (decoding): the query heads of a group become the rows of their key/value head,
          (B, h, 1, D) -> (B, kv, groups, D); the mask (B, 1, 1, S) broadcasts over them. Equal head counts, no
          copy of K/V.
        - A masked GQA prefill on CUDA: K/V are expanded to the query heads (repeat_interleave, as enable_gqa
          pairs them).
        """
        dropout = self.dropout if self.training else 0.0
        groups = self.heads_num // self.kv_heads_num
        batch, heads, length, size = q.shape
        if groups > 1 and mask is not None and length == 1 and mask.shape[1] == 1 and mask.shape[2] == 1:
            folded = q.reshape(batch, self.kv_heads_num, groups, size)  # query head kv * groups + g -> row g of kv
            out = F.scaled_dot_product_attention(folded, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scale)
            return out.reshape(batch, heads, 1, size)
        if groups > 1 and mask is not None and q.device.type == "cuda":
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            groups = 1
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal,
                                              scale=self.scale, enable_gqa=groups > 1)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, heads * D) -> (B, T, heads, D)."""
        return x.view(*x.shape[:-1], x.shape[-1] // self.head_size, self.head_size)

    def _attend_with_dropout(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, *, causal: bool = True
    ) -> torch.Tensor:
        """SDPA's computation written out, for CPU training with dropout: the probabilities' dropout takes the
        cheap masks of ``layers.dropout`` (SDPA draws torch's, about 4x dearer). q (B, h, T, D), k/v (B, kv, S, D)
        -> (B, h, T, D). A query row with no visible key (padding) attends evenly instead of giving NaN."""
        groups = self.heads_num // self.kv_heads_num
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, h, S, D)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (B, h, T, S)
        if mask is None and causal:  # the last query sees every key
            queries, keys = q.shape[-2], k.shape[-2]
            mask = torch.ones(queries, keys, dtype=torch.bool, device=q.device).tril(keys - queries)
        if mask is None:
            pass
        elif mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
        probs = dropout(torch.softmax(scores, dim=-1), self.dropout)  # (B, h, T, S)
        return torch.matmul(probs, v)

    def _fused_projections(
        self, query: torch.Tensor, key_value: torch.Tensor | None, rope: torch.Tensor | None,
        packing: Packing | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V (B, T, heads, D) from the fused linear, Q and K rotated together."""
        if key_value is not None and key_value is not query:
            raise ValueError("a fused QKV projection is for self-attention only")
        h, kv = self.heads_num, self.kv_heads_num
        qkv = self.qkv(query)
        qkv = self._heads(qkv if packing is None else packing.unpack(qkv))  # (B, T, h + 2kv, D)
        qk, v = qkv[:, :, : h + kv], qkv[:, :, h + kv :]
        if rope is not None:
            qk = apply_rotary_emb(qk, rope)
        q, k = qk.split([h, kv], dim=2)
        return q, k, v

