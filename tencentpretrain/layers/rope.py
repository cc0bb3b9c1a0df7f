"""Rotary position embeddings in Meta's interleaved layout.

Dimensions ``(2i, 2i+1)`` of each head form one rotated pair, as in Meta's LLaMA code and TencentPretrain.
HF's ``rotate_half`` layout pairs ``(i, i + d/2)`` instead; the HF weight map permutes Q and K rows to move
between the two (see ``tencentpretrain.convert.llama_hf``). The angles are computed from explicit positions,
so there is no table whose size limits the sequence length.
"""

from __future__ import annotations

import torch


def rope_inverse_frequencies(head_size: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """``theta ** (-2i / head_size)`` for i in [0, head_size / 2), float32, shape (head_size / 2,)."""
    exponents = torch.arange(0, head_size, 2, device=device, dtype=torch.float32) / head_size
    return 1.0 / (theta**exponents)


def rope_cos_sin(
    positions: torch.Tensor, head_size: int, theta: float, scaling_factor: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the rotation angles.

    Args:
        positions: (B, T) integer positions.
        scaling_factor: linear position interpolation; positions are divided by it.
    Returns:
        cos, sin: (B, T, 1, head_size / 2) float32, broadcastable over heads.
    """
    inv_freq = rope_inverse_frequencies(head_size, theta, positions.device)
    angles = (positions.float() / scaling_factor)[..., None] * inv_freq  # (B, T, D/2)
    return angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of ``x`` (B, T, heads, D) by the angles; computed in float32, cast back."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, T, h, D/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)  # (B, T, h, D/2, 2)
    return rotated.flatten(-2).type_as(x)
