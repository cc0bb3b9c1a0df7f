"""``polynomial``: warm up, then decay as (1 - progress)^power from the peak to ``lr_end`` (1e-7)."""

from __future__ import annotations

from collections.abc import Callable

from tencentpretrain.registry import SCHEDULERS
from tencentpretrain.training.config import OptimConfig
from tencentpretrain.training.schedulers.warmup import progress, warmup_factor

LR_END = 1e-7
POWER = 1.0


@SCHEDULERS.register("polynomial")
def polynomial(warmup_steps: int, total_steps: int, config: OptimConfig) -> Callable[[int], float]:
    peak = config.learning_rate
    end = min(LR_END, peak)

    def factor(step: int) -> float:
        ramp = warmup_factor(step, warmup_steps)
        if ramp is not None:
            return ramp
        remaining = 1.0 - progress(step, warmup_steps, total_steps)
        return ((peak - end) * remaining**POWER + end) / peak

    return factor
