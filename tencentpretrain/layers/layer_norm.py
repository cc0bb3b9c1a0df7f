"""The original framework's LayerNorm (config ``layernorm: "normal"``), used by BERT and GPT-2 configs."""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.registry import LAYERNORMS


@LAYERNORMS.register("normal")
class LayerNorm(nn.Module):
    """``gamma * (x - mean) / (std + eps) + beta`` with the *unbiased* std and eps outside the square root.

    This is deliberately not ``nn.LayerNorm``: checkpoints of the original were trained with this formula,
    and its parameters are named ``gamma``/``beta`` in their state_dicts.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(hidden_size))
        self.beta = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., H)
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.gamma * (x - mean) / (std + self.eps) + self.beta

    def reset_parameters(self) -> None:
        nn.init.ones_(self.gamma)
        nn.init.zeros_(self.beta)
