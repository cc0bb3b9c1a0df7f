"""Warm-up helper shared by the schedules: a linear ramp from 0 to 1 over ``warmup_steps``."""

from __future__ import annotations


def warmup_factor(step: int, warmup_steps: int) -> float | None:
    """The multiplier during warm-up, or None once it is over."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return None


def progress(step: int, warmup_steps: int, total_steps: int) -> float:
    """Fraction of the post-warm-up steps done, in [0, 1]."""
    return min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
