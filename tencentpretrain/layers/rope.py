"""Rotary position embeddings in Meta's interleaved layout.

Dimensions ``(2i, 2i+1)`` of each head form one rotated pair, as in Meta's LLaMA code and TencentPretrain.
HF's ``rotate_half`` layout pairs ``(i, i + d/2)`` instead; the HF weight map permutes Q and K rows to move
between the two (see ``tencentpretrain.convert.families.llama``). The angles are computed from explicit positions,
so there is no table whose size limits the sequence length.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=16)
def rope_inverse_frequencies(head_size: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """``theta ** (-2i / head_size)`` for i in [0, head_size / 2), float32, shape (head_size / 2,). Cached: it
    is the same for every forward pass (read-only). Made as a normal tensor even when first asked for under
    ``torch.inference_mode``, so training may use it afterwards."""
    with torch.inference_mode(False):
        exponents = torch.arange(0, head_size, 2, device=device, dtype=torch.float32) / head_size
        return 1.0 / (theta**exponents)


def rope_rotations(
    positions: torch.Tensor, head_size: int, theta: float, scaling_factor: float = 1.0
) -> torch.Tensor:
    """The rotation of each position as unit complex numbers ``exp(i * angle)``.

    Args:
        positions: (B, T) integer positions.
        scaling_factor: linear position interpolation; positions are divided by it.
    Returns:
        (B, T, 1, head_size / 2) complex64, broadcastable over heads.
    """
    inv_freq = rope_inverse_frequencies(head_size, float(theta), positions.device)
    angles = (positions.float() / scaling_factor)[..., None] * inv_freq  # (B, T, D/2)
    return torch.polar(torch.ones_like(angles), angles)[:, :, None, :]


def apply_rotary_emb(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of ``x`` (B, T, heads, D) by ``rotations`` (B, T, 1, D/2) of ``rope_rotations``:
    each pair is one complex number, so the rotation is one complex product. Computed in float32, cast back."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (B, T, h, D/2) complex
    return torch.view_as_real(pairs * rotations).flatten(-2).type_as(x)
