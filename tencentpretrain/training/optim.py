"""Parameter groups, optimizer and learning-rate schedule of a run (looked up in OPTIMIZERS / SCHEDULERS)."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from tencentpretrain.registry import OPTIMIZERS, SCHEDULERS
from tencentpretrain.training.config import OptimConfig

logger = logging.getLogger(__name__)

# As the original: biases and norm gains/shifts are not decayed. LoRA weights are not decayed either.
NO_DECAY = ("bias", "gamma", "beta", "layer_norm.weight", "layer_norm_1.weight", "layer_norm_2.weight", "lora_")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split into a decayed and an undecayed group (empty groups are left out)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if any(k in name for k in NO_DECAY) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """The registered optimizer ``config.optimizer`` over the trainable parameters of ``model``."""
    return OPTIMIZERS.get(config.optimizer)(param_groups(model, config.weight_decay), config)


def warmup_steps(config: OptimConfig, total_steps: int) -> int:
    return math.floor(total_steps * config.warmup)


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over ``total_steps`` optimizer steps with the registered schedule ``config.scheduler``."""
    make = SCHEDULERS.get(config.scheduler)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, make(warmup_steps(config, total_steps), total_steps, config))
