"""Sequence pooling shared by the classification targets (config key ``pooling``)."""

from __future__ import annotations

import torch

from tencentpretrain.errors import ConfigError

POOLINGS = ("first", "last", "mean", "max")


def pool(hidden: torch.Tensor, valid: torch.Tensor | None, kind: str) -> torch.Tensor:
    """(B, T, H) -> (B, H). ``valid`` (B, T) bool marks real tokens (None = all real)."""
    if kind == "first":
        return hidden[:, 0]
    if valid is None:
        valid = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    if kind == "last":
        last = valid.long().sum(1).clamp(min=1) - 1  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = valid.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if kind == "mean":
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    if kind == "max":
        return hidden.masked_fill(~valid.unsqueeze(-1), torch.finfo(hidden.dtype).min).max(1).values
    raise ConfigError(f"pooling: unknown value {kind!r}; choose from {', '.join(POOLINGS)}")
