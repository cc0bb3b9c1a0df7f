"""``sgd``: plain SGD with momentum ``--adam_beta1`` (a baseline and a cheap optimizer for tests)."""

from __future__ import annotations

from typing import Any

import torch

from tencentpretrain.registry import OPTIMIZERS
from tencentpretrain.training.config import OptimConfig


@OPTIMIZERS.register("sgd")
def build_sgd(param_groups: list[dict[str, Any]], config: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(param_groups, lr=config.learning_rate, momentum=config.adam_beta1,
                           weight_decay=config.weight_decay)
