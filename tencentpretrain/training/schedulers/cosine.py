"""``cosine`` (half a cosine to 0) and ``cosine_with_restarts`` (one hard restart by default)."""

from __future__ import annotations

import math
from collections.abc import Callable

from tencentpretrain.registry import SCHEDULERS
from tencentpretrain.training.config import OptimConfig
from tencentpretrain.training.schedulers.warmup import progress, warmup_factor


@SCHEDULERS.register("cosine")
def cosine(warmup_steps: int, total_steps: int, config: OptimConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        ramp = warmup_factor(step, warmup_steps)
        if ramp is not None:
            return ramp
        return 0.5 * (1.0 + math.cos(math.pi * progress(step, warmup_steps, total_steps)))

    return factor


@SCHEDULERS.register("cosine_with_restarts")
def cosine_with_restarts(warmup_steps: int, total_steps: int, config: OptimConfig,
                         cycles: int = 1) -> Callable[[int], float]:
    def factor(step: int) -> float:
        ramp = warmup_factor(step, warmup_steps)
        if ramp is not None:
            return ramp
        done = progress(step, warmup_steps, total_steps)
        if done >= 1.0:
            return 0.0
        return 0.5 * (1.0 + math.cos(math.pi * ((cycles * done) % 1.0)))

    return factor
