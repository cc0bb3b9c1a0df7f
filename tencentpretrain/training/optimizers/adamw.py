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
        """One update of every parameter with a gradient: torch's fused Adam kernel (one pass over each tensor)
        where the group's tensors share a device and dtype, else torch._foreach_* ops over the group; both give
        ``reference_step``'s numbers within float rounding, and the state (``step``, ``exp_avg``,
        ``exp_avg_sq``) is laid out alike."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state_of(p) for p in params]
            torch._foreach_add_([s["step"] for s in states], 1)
            if _fusable(params):
                self._fused_update(group, params, states)
            else:
                self._foreach_update(group, params, states)
            if group["weight_decay"] > 0:  # after the update, on the updated weights, as the original did
                torch._foreach_add_(params, params, alpha=-group["lr"] * group["weight_decay"])

    @staticmethod
    def _fused_update(group: dict[str, Any], params: list[torch.Tensor], states: list[dict[str, Any]]) -> None:
        # The kernel divides by the bias corrections 1 - beta ** step; an infinite step makes both exactly 1.
        no_correction = torch.full((), float("inf"), device=params[0].device)
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(
            params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
            [], [no_correction] * len(params), lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0,
            eps=group["eps"], amsgrad=False, maximize=False)

    @staticmethod
    def _foreach_update(group: dict[str, Any], params: list[torch.Tensor], states: list[dict[str, Any]]) -> None:
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denominators, group["eps"])
        torch._foreach_addcdiv_(params, exp_avgs, denominators, value=-group["lr"])

    @torch.no_grad()
    def reference_step(self) -> None:
        """The update written parameter by parameter (the original's loop); ``step`` computes the same."""
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state_of(p)
                state["step"] += 1
                state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.addcdiv_(state["exp_avg"], state["exp_avg_sq"].sqrt().add_(group["eps"]), value=-group["lr"])
                if group["weight_decay"] > 0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])

    def _state_of(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        return state


def _fusable(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused Adam kernel takes these tensors: dense floating point, one device and dtype."""
    first = params[0]
    return hasattr(torch, "_fused_adamw_") and all(
        p.device == first.device and p.dtype == first.dtype and p.grad.dtype == p.dtype and p.is_floating_point()
        and not p.grad.is_sparse and p.layout == torch.strided for p in params)


@OPTIMIZERS.register("adamw")
def build_adamw(param_groups: list[dict[str, Any]], config: OptimConfig) -> torch.optim.Optimizer:
    """torch.optim.AdamW (foreach implementation) or, with ``--no-bias_correction``, the original's variant."""
    betas = (config.adam_beta1, config.adam_beta2)
    if not config.bias_correction:
        return AdamWNoBiasCorrection(param_groups, config.learning_rate, betas, config.adam_epsilon,
                                     config.weight_decay)
    return torch.optim.AdamW(param_groups, lr=config.learning_rate, betas=betas, eps=config.adam_epsilon,
                             weight_decay=config.weight_decay)
