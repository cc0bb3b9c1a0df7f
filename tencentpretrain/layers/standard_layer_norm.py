"""The standard LayerNorm (config ``layernorm: "standard"``): ``torch.nn.functional.layer_norm``.

The original framework's ``normal`` LayerNorm divides by the *unbiased* std plus eps (``layers/layer_norm.py``),
which is not what HuggingFace BERT, GPT-2 or ViT compute (biased variance, eps inside the square root). With
hidden size H the two differ by a factor close to sqrt(H / (H - 1)), far above fp32 rounding, so a model
converted from HF selects ``standard`` in its config to reproduce HF's logits exactly, while the shipped
configs of the original keep ``normal`` so that checkpoints trained by the original behave as they were
trained. Both keep the original's parameter names ``gamma``/``beta``, so the checkpoint keys are the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.registry import LAYERNORMS


@LAYERNORMS.register("standard")
class StandardLayerNorm(nn.Module):
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` with the biased variance (``nn.LayerNorm``'s formula)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(hidden_size))
        self.beta = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., H)
        return F.layer_norm(x, self.gamma.shape, self.gamma, self.beta, self.eps)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.gamma)
        nn.init.zeros_(self.beta)


def affine_layernorm_name(layernorm: str) -> str:
    """The norm of the places where the original always used its ``normal`` LayerNorm (embedding layer norm,
    ``mlm`` target): ``standard`` when the model's ``layernorm`` is ``standard`` (HF-converted models), else
    ``normal``, so the original's configs keep their behaviour and their ``gamma``/``beta`` keys."""
    return "standard" if layernorm == "standard" else "normal"
