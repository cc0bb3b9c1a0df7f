"""``inverse_sqrt``: warm up, then decay as sqrt(warmup_steps / step)."""

from __future__ import annotations

import math
from collections.abc import Callable

from tencentpretrain.registry import SCHEDULERS
from tencentpretrain.training.config import OptimConfig
from tencentpretrain.training.schedulers.warmup import warmup_factor


@SCHEDULERS.register("inverse_sqrt")
def inverse_sqrt(warmup_steps: int, total_steps: int, config: OptimConfig) -> Callable[[int], float]:
    timescale = max(1, warmup_steps)

    def factor(step: int) -> float:
        ramp = warmup_factor(step, warmup_steps)
        return ramp if ramp is not None else 1.0 / math.sqrt(max(step, timescale) / timescale)

    return factor
