"""Dropout with cheap masks on the CPU.

torch's CPU dropout draws one Bernoulli sample per element from its Mersenne Twister, about 7 ns an element: in a
tiny BERT's fine-tuning step that is a sixth of the time, more than the layer norms and the optimizer together.
Here a CPU mask takes 16 bits of a 64-bit draw of the same generator per element (four elements a draw), about 4x
cheaper with the multiply included. An element is kept with probability ``round((1 - p) * 65536) / 65536`` (within
1/131072 of ``1 - p``) and scaled by the inverse of that probability, so the expectation is exactly the input's.
The masks come from torch's default generator, so ``torch.manual_seed`` and saved RNG states still reproduce them;
they are not the masks torch's own dropout draws from the same seed. ``use_torch_dropout(True)`` goes back to
torch's (``--torch_dropout`` of the fine-tuning scripts), which with the same seed draws exactly the original
TencentPretrain's masks. Other devices always use torch's dropout (CUDA's is a fused Philox kernel already).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # a mask element is 16 random bits
_torch_dropout = False


def use_torch_dropout(enabled: bool = True) -> None:
    """Draw dropout masks with torch's own dropout everywhere (same masks as the original for the same seed)."""
    global _torch_dropout
    _torch_dropout = enabled


def torch_dropout_in_use() -> bool:
    """Whether ``use_torch_dropout`` switched the cheap masks off."""
    return _torch_dropout


def fast_masks_apply(x: torch.Tensor, p: float, training: bool) -> bool:
    """Whether ``dropout`` draws its own mask for ``x``: training, 0 < p < 1, a CPU tensor, not switched off."""
    return training and 0.0 < p < 1.0 and x.device.type == "cpu" and not _torch_dropout


def keep_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A bool mask of ``shape`` (True = kept) with keep probability about ``1 - p``, and ``1 / P(keep)``."""
    kept_levels = round((1.0 - p) * _LEVELS)
    if kept_levels == 0:  # p within 1/131072 of 1: nothing is kept
        return torch.zeros(shape, dtype=torch.bool), 0.0
    numel = shape.numel()
    words = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # 64 uniform bits each
    draws = words.view(torch.int16)[:numel].view(shape)  # uniform in [-32768, 32767]
    return draws < kept_levels - _LEVELS // 2, _LEVELS / kept_levels


class _MaskedScale(torch.autograd.Function):
    """``x * keep * scale`` that keeps only the bool mask (1 byte an element) for the backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with a cheap mask for CPU tensors (see the module docstring)."""
    if not fast_masks_apply(x, p, training):
        return F.dropout(x, p, training)
    keep, scale = keep_mask(x.shape, p)
    return _MaskedScale.apply(x, keep, scale)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with ``dropout``'s cheap CPU masks; same attributes, no parameters or buffers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace and not fast_masks_apply(x, self.p, self.training):
            return F.dropout(x, self.p, self.training, inplace=True)
        return dropout(x, self.p, self.training)
