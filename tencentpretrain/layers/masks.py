"""Attention visibility rules of the ``mask`` config key, as boolean masks (True = may attend).

Rules, for a query at slot i and a key at slot j with segment ids (0 = padding):
- ``causal``: j <= i and the key is not padding.
- ``fully_visible``: the key is not padding.
- ``causal_with_prefix``: the key is in the prefix (segment 1), or j <= i and the key is not padding.
Every query may always see itself, so a row of padding never has an empty softmax (which would give NaN).
"""

from __future__ import annotations

import torch

MASK_KINDS = ("causal", "fully_visible", "causal_with_prefix")


def build_attention_mask(kind: str, key_seg: torch.Tensor, query_start: int) -> torch.Tensor:
    """Boolean visibility mask.

    Args:
        kind: one of MASK_KINDS.
        key_seg: (B, S) segment ids of every key slot; queries are the last T = S - query_start slots.
        query_start: slot index of the first query.
    Returns:
        (B, 1, T, S) bool mask for ``scaled_dot_product_attention``.
    """
    key_len = key_seg.shape[1]
    key_slots = torch.arange(key_len, device=key_seg.device)  # (S,)
    query_slots = key_slots[query_start:]  # (T,)
    key_real = (key_seg > 0)[:, None, None, :]  # (B, 1, 1, S)
    causal = key_slots[None, :] <= query_slots[:, None]  # (T, S)
    if kind == "causal":
        visible = causal & key_real
    elif kind == "fully_visible":
        visible = key_real.expand(-1, -1, len(query_slots), -1)
    elif kind == "causal_with_prefix":
        visible = (key_seg == 1)[:, None, None, :] | (causal & key_real)
    else:
        raise ValueError(f"unknown mask {kind!r}; choose from {', '.join(MASK_KINDS)}")
    return visible | (key_slots[None, :] == query_slots[:, None])  # (B, 1, T, S)
