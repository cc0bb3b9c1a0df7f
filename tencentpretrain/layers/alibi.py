"""ALiBi position bias (config ``alibi_position_embedding: true``), as BLOOM uses it.

Head h adds ``slope_h * j`` to its score for a key at position j (the key's index among the row's real tokens),
with the geometric slopes of Press et al.: for n heads rounded down to a power of two p, slope_h =
2^(-8 (h + 1) / p); the heads beyond p take every other slope of the 2p sequence. Since softmax ignores a
constant per query row, ``slope * j`` acts as ``slope * (j - i)``: a penalty growing with the distance back.
This is BLOOM's (and the original's ``utils/alibi.py``) bias. The encoder folds it into the float additive mask
that every layer gets; attention itself stays unaware of it, as with T5's relative positions.

``layer_number_scale`` (the original's Megatron-style query-key layer scaling) divides the scores by the layer
number before a half-precision softmax and multiplies them back inside it: the same function, a guard against
fp16 overflow. scaled_dot_product_attention accumulates in float32, so the key is accepted with that meaning
and changes nothing (tests/core/test_original_components.py runs the original's scaled attention against ours).
"""

from __future__ import annotations

import math

import torch


def alibi_slopes(heads_num: int) -> torch.Tensor:
    """(heads_num,) float32 slopes, computed as float32 powers (bit-equal to BLOOM's)."""
    power = 2 ** math.floor(math.log2(heads_num))
    base = torch.tensor(2.0 ** (-8.0 / power), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, power + 1, dtype=torch.int32))
    if power != heads_num:  # the odd terms of the 2p-head sequence, 2^(-8 k / (2p)) for k = 1, 3, ...
        extra_base = torch.tensor(2.0 ** (-4.0 / power), dtype=torch.float32)
        extra = torch.pow(extra_base, torch.arange(1, 2 * (heads_num - power), 2, dtype=torch.int32))
        slopes = torch.cat([slopes, extra])
    return slopes


def alibi_additive_mask(visible: torch.Tensor, key_seg: torch.Tensor, heads_num: int,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fold the bias into a boolean mask.

    Args:
        visible: (B, 1, T, S) bool, True = may attend.
        key_seg: (B, S) segment ids of the key slots (0 = padding), which give the keys' positions.
    Returns:
        (B, heads, T, S) float additive mask: the bias where visible, the dtype's minimum elsewhere.
    """
    real = (key_seg > 0).to(torch.float32)  # (B, S)
    key_positions = (real.cumsum(-1) - 1) * real  # (B, S): index among the row's real tokens
    slopes = alibi_slopes(heads_num).to(key_seg.device)
    bias = slopes[None, :, None, None] * key_positions[:, None, None, :]  # (B, h, 1, S)
    bias = bias.to(dtype).expand(-1, -1, visible.shape[-2], -1)  # (B, h, T, S)
    return bias.masked_fill(~visible, torch.finfo(dtype).min)
