"""Registered activation functions (config key ``hidden_act``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tencentpretrain.registry import ACTIVATIONS


@ACTIVATIONS.register("gelu")
def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU (erf), BERT's activation."""
    return F.gelu(x)


@ACTIVATIONS.register("gelu_fast")
def gelu_fast(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation, GPT-2's activation."""
    return F.gelu(x, approximate="tanh")


@ACTIVATIONS.register("relu")
def relu(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x)


@ACTIVATIONS.register("silu")
def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU / swish, LLaMA's gate activation."""
    return F.silu(x)


@ACTIVATIONS.register("linear")
def linear(x: torch.Tensor) -> torch.Tensor:
    """The identity."""
    return x


