"""What every target returns."""

from __future__ import annotations

from typing import NamedTuple

import torch


class TargetOutput(NamedTuple):
    """A scalar training loss and detached tensors a report can show (no host sync happens here)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
