"""``adafactor``: torch's Adafactor (factored second moments, no first moment) at a fixed learning rate."""

from __future__ import annotations

from typing import Any

import torch

from tencentpretrain.registry import OPTIMIZERS
from tencentpretrain.training.config import OptimConfig


@OPTIMIZERS.register("adafactor")
def build_adafactor(param_groups: list[dict[str, Any]], config: OptimConfig) -> torch.optim.Optimizer:
    """``torch.optim.Adafactor``; its step size is min(lr, 1/sqrt(step)), not scaled by the parameter RMS.

    The original used HF's Adafactor with ``scale_parameter=False, relative_step=False``; this is torch's own
    implementation of the same factored update.
    """
    return torch.optim.Adafactor(param_groups, lr=config.learning_rate, weight_decay=config.weight_decay)
