"""Activation checkpointing as a transform: recompute each transformer layer in the backward pass."""

from __future__ import annotations

from torch import nn

from tencentpretrain.errors import ConfigError


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each transformer layer's activations in the backward pass instead of storing them."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "gradient_checkpointing"):
        raise ConfigError("activation checkpointing needs a model with a transformer encoder")
    encoder.gradient_checkpointing = True
