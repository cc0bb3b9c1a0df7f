"""Stacking linears that read the same input into one, for inference (fewer, larger matrix products)."""

from __future__ import annotations

import torch
from torch import nn


def stacked_linear(linears: list[nn.Linear]) -> nn.Linear:
    """One Linear computing the given linears (same input) side by side: their outputs concatenated."""
    first = linears[0]
    fused = nn.Linear(first.in_features, sum(lin.out_features for lin in linears), bias=first.bias is not None,
                      device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([lin.weight for lin in linears]))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([lin.bias for lin in linears]))
    return fused.train(first.training).requires_grad_(False)
