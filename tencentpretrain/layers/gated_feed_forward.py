"""Gated feed-forward (config ``feed_forward: "gated"``): SwiGLU in LLaMA."""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.layers.stacked_linear import stacked_linear
from tencentpretrain.registry import ACTIVATIONS, FEEDFORWARDS


@FEEDFORWARDS.register("gated")
class GatedFeedForward(nn.Module):
    """``linear_2(act(linear_gate(x)) * linear_1(x))``.

    LLaMA names: linear_gate = w1 / gate_proj, linear_1 = w3 / up_proj, linear_2 = w2 / down_proj.
    """

    def __init__(self, hidden_size: int, feedforward_size: int, hidden_act: str, bias: bool = True) -> None:
        super().__init__()
        self.linear_gate = nn.Linear(hidden_size, feedforward_size, bias=bias)
        self.linear_1 = nn.Linear(hidden_size, feedforward_size, bias=bias)
        self.linear_2 = nn.Linear(feedforward_size, hidden_size, bias=bias)
        self.act = ACTIVATIONS.get(hidden_act)
        self.gate_up: nn.Linear | None = None  # set by fuse_gate_up_ (inference)

    def fuse_gate_up_(self) -> None:
        """For inference: one matrix product for the gate and up projections (weights stacked). Parameter names
        change (``gate_up``): fuse after loading."""
        fused = stacked_linear([self.linear_gate, self.linear_1])
        del self.linear_gate, self.linear_1
        self.gate_up = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, T, H)
        if self.gate_up is not None:
            gate, up = self.gate_up(x).chunk(2, dim=-1)
            return self.linear_2(self.act(gate) * up)
        return self.linear_2(self.act(self.linear_gate(x)) * self.linear_1(x))
