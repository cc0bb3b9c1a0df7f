"""Position-wise feed-forward (config ``feed_forward: "dense"``): BERT and GPT-2."""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.registry import ACTIVATIONS, FEEDFORWARDS


@FEEDFORWARDS.register("dense")
class PositionwiseFeedForward(nn.Module):
    """``linear_2(act(linear_1(x)))``."""

    def __init__(self, hidden_size: int, feedforward_size: int, hidden_act: str, bias: bool = True) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(hidden_size, feedforward_size, bias=bias)
        self.linear_2 = nn.Linear(feedforward_size, hidden_size, bias=bias)
        self.act = ACTIVATIONS.get(hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, T, H)
        return self.linear_2(self.act(self.linear_1(x)))
