"""T5's layer norm (config ``layernorm: "t5"``): RMS without mean subtraction, variance in float32."""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.registry import LAYERNORMS


@LAYERNORMS.register("t5")
class T5LayerNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)``; the product is taken in the weight's dtype when it is half."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., H)
        variance = x.float().pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
