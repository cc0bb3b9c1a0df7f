"""``linear``, ``constant`` and ``constant_with_warmup``."""

from __future__ import annotations

from collections.abc import Callable

from tencentpretrain.registry import SCHEDULERS
from tencentpretrain.training.config import OptimConfig
from tencentpretrain.training.schedulers.warmup import progress, warmup_factor


@SCHEDULERS.register("linear")
def linear(warmup_steps: int, total_steps: int, config: OptimConfig) -> Callable[[int], float]:
    """Warm up, then decay linearly to 0 at ``total_steps``."""
    return lambda step: _or(warmup_factor(step, warmup_steps), lambda: 1.0 - progress(step, warmup_steps, total_steps))


@SCHEDULERS.register("constant")
def constant(warmup_steps: int, total_steps: int, config: OptimConfig) -> Callable[[int], float]:
    """No warm-up, no decay."""
    return lambda step: 1.0


@SCHEDULERS.register("constant_with_warmup")
def constant_with_warmup(warmup_steps: int, total_steps: int, config: OptimConfig) -> Callable[[int], float]:
    """Warm up, then constant."""
    return lambda step: _or(warmup_factor(step, warmup_steps), lambda: 1.0)


def _or(value: float | None, otherwise: Callable[[], float]) -> float:
    return otherwise() if value is None else value
