"""``tri_stage``: linear warm-up, hold at the peak, then exponential decay to 5% of the peak over the last
``--decay`` fraction of the steps (the original read ``decay`` from the config JSON; here it is also a flag)."""

from __future__ import annotations

import math
from collections.abc import Callable

from tencentpretrain.registry import SCHEDULERS
from tencentpretrain.training.config import OptimConfig
from tencentpretrain.training.schedulers.warmup import warmup_factor

FINAL_SCALE = 0.05


@SCHEDULERS.register("tri_stage")
def tri_stage(warmup_steps: int, total_steps: int, config: OptimConfig) -> Callable[[int], float]:
    decay_steps = int(total_steps * config.decay)
    hold_end = max(warmup_steps, total_steps - decay_steps)

    def factor(step: int) -> float:
        ramp = warmup_factor(step, warmup_steps)
        if ramp is not None:
            return ramp
        if step < hold_end:
            return 1.0
        done = min(1.0, (step - hold_end) / max(1, decay_steps))
        return math.exp(math.log(FINAL_SCALE) * done)

    return factor
