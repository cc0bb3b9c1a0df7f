"""Agreement with the original TencentPretrain's fine-tuning: its learning-rate schedule, and (with files it
wrote, committed under tests/assets/original_finetune/) its fine-tuned classifier and predictions."""

from __future__ import annotations

import pytest
import torch

from tencentpretrain.finetune.loop import finetune_scheduler
from tencentpretrain.finetune.options import FinetuneOptimConfig


def _original_linear_factor(step: int, total: int, warmup: float) -> float:
    """The original's get_linear_schedule_with_warmup with num_warmup_steps = train_steps * warmup (a float)."""
    warmup_steps = total * warmup
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total - step) / max(1, total - warmup_steps))


@pytest.mark.parametrize("total", [5, 188])
def test_the_schedule_is_the_originals_with_its_fractional_warmup(total):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-5)
    scheduler = finetune_scheduler(optimizer, FinetuneOptimConfig(learning_rate=2e-5), total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [2e-5 * _original_linear_factor(step, total, 0.1) for step in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if total == 5:
        assert lrs[0] == 0.0 and lrs[1] == pytest.approx(2e-5 * 4 / 4.5)  # warm-up over 0.5 steps, not 0
