"""RMSNorm (config ``layernorm: "rms"``), LLaMA's normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.registry import LAYERNORMS


@LAYERNORMS.register("rms")
class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight``, normalised in float32 and cast back before the gain."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., H)
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:  # the same formula in one fused op
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
