"""``adamw``: torch's AdamW (decoupled weight decay), with bias correction unless asked not to."""

from __future__ import annotations

from typing import Any

import torch

from tencentpretrain.registry import OPTIMIZERS
from tencentpretrain.training.config import OptimConfig


class AdamWNoBiasCorrection(torch.optim.Optimizer):
    """AdamW without bias correction, as the original TencentPretrain trained (``correct_bias=False``).

    ``p -= lr * m / (sqrt(v) + eps)`` then ``p -= lr * wd * p``. Kept only to reproduce old runs: a freshly
    initialised model barely moves for the first tens of steps with it.
    """

    def __init__(self, params: Any, lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.addcdiv_(state["exp_avg"], state["exp_avg_sq"].sqrt().add_(group["eps"]), value=-group["lr"])
                if group["weight_decay"] > 0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])


@OPTIMIZERS.register("adamw")
def build_adamw(param_groups: list[dict[str, Any]], config: OptimConfig) -> torch.optim.Optimizer:
    """torch.optim.AdamW (foreach implementation) or, with ``--no-bias_correction``, the original's variant."""
    betas = (config.adam_beta1, config.adam_beta2)
    if not config.bias_correction:
        return AdamWNoBiasCorrection(param_groups, config.learning_rate, betas, config.adam_epsilon,
                                     config.weight_decay)
    return torch.optim.AdamW(param_groups, lr=config.learning_rate, betas=betas, eps=config.adam_epsilon,
                             weight_decay=config.weight_decay)
