"""Reading training logs back: the report and evaluation lines, and a PNG loss curve."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from tencentpretrain.errors import DataError

logger = logging.getLogger(__name__)

REPORT_RE = re.compile(r"\|\s*(\d+)/\s*(\d+) steps\|.*?\| loss\s+([-\d.naif]+)")
EVAL_RE = re.compile(r"\| eval at step\s+(\d+)\| loss\s+([-\d.naif]+)")


@dataclass(frozen=True)
class LossCurve:
    train: list[tuple[int, float]]  # (step, loss) of every report line
    eval: list[tuple[int, float]]  # (step, loss) of every evaluation line


def read_loss_curve(path: str) -> LossCurve:
    """The losses in a log; the original TencentPretrain's report lines are read too."""
    train, evals = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if match := EVAL_RE.search(line):
                evals.append((int(match.group(1)), float(match.group(2))))
            elif match := REPORT_RE.search(line):
                train.append((int(match.group(1)), float(match.group(3))))
    if not train and not evals:
        raise DataError(f"{path}: no report lines ('| step/total steps| ... | loss L') found")
    return LossCurve(train, evals)


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss(log_path: str, output_path: str, *, smooth: int = 1, title: str | None = None) -> None:
    """Write the training (and evaluation) loss of ``log_path`` against the step as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = read_loss_curve(log_path)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if curve.train:
        steps, losses = zip(*curve.train)
        ax.plot(steps, moving_average(list(losses), max(1, smooth)), label="train loss")
    if curve.eval:
        steps, losses = zip(*curve.eval)
        ax.plot(steps, losses, "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or os.path.basename(log_path))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(output_path, format="png")
    plt.close(fig)
    logger.info("wrote %s (%d train points, %d eval points)", output_path, len(curve.train), len(curve.eval))
