"""Registered learning-rate schedules: every module of this package registers its schedules on import.

A schedule is ``make(warmup_steps, total_steps, config: OptimConfig) -> (step -> multiplier)``; the multiplier
scales ``--learning_rate`` at optimizer step ``step`` (0-based). ``build_scheduler`` wraps it in a LambdaLR,
stepped once per optimizer step. The shapes follow the original (HF-style) schedules.
"""

from tencentpretrain.registry import import_submodules

import_submodules(__name__)
