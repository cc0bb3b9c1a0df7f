"""Logs of a run: the report line, evaluation lines, a progress bar in a terminal, TensorBoard scalars.

The report line extends the original's ``| step/total steps| tokens/s| loss`` (same widths, so scripts that
parse it keep working) with the learning rate, the gradient norm and the throughput counted without padding::

    |       10/     100 steps|  1493.99 tokens/s| loss    8.99| lr 1.000e-04| grad_norm   1.234| 1201.55 real tokens/s

Only rank 0 reports. Everything the report needs from the device is gathered on report steps, so the loop syncs
with the host only there.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from tencentpretrain.training.config import LogOptions

logger = logging.getLogger("tencentpretrain.training")

LOG_FORMAT = "[%(asctime)s %(levelname)s] %(message)s"


def setup_logging(options: LogOptions, *, rank: int) -> None:
    """Console (rank 0 at ``--log_level``, other ranks warnings only) and ``--log_path`` (rank 0) handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tencentpretrain", False):
            root.removeHandler(handler)
    formatter = logging.Formatter(LOG_FORMAT)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(options.log_level if rank == 0 else logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if options.log_path and rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(options.log_path)), exist_ok=True)
        file_handler = logging.FileHandler(options.log_path, encoding="utf-8")
        file_handler.setLevel(options.log_file_level)
        handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._tencentpretrain = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(min(h.level for h in handlers) or logging.DEBUG)


@dataclass(frozen=True)
class Report:
    """One report window, already on the host."""

    step: int
    total_steps: int
    loss: float  # mean of the micro-batch losses of the window (all ranks)
    lr: float
    grad_norm: float  # mean over the window's optimizer steps
    tokens_per_s: float  # nominal: batch x seq_length x micro-steps x ranks, padding included (the original's)
    real_tokens_per_s: float  # non-padding tokens only


def format_report(r: Report) -> str:
    return (f"| {r.step:8d}/{r.total_steps:8d} steps| {r.tokens_per_s:8.2f} tokens/s| loss {r.loss:7.2f}"
            f"| lr {r.lr:.3e}| grad_norm {r.grad_norm:7.3f}| {r.real_tokens_per_s:8.2f} real tokens/s")


def format_eval(step: int, loss: float, tokens: int) -> str:
    return f"| eval at step {step:8d}| loss {loss:7.4f}| ppl {perplexity(loss):10.3f}| {tokens} tokens"


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


class Reporter:
    """Rank 0's outputs: log lines, a tqdm bar when stderr is a terminal, TensorBoard when asked."""

    def __init__(self, options: LogOptions, *, total_steps: int, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = self._progress_bar(total_steps, start_step) if enabled else None
        self.writer = self._tensorboard(options.tensorboard_dir) if enabled else None
        self.window_start = time.perf_counter()

    @staticmethod
    def _progress_bar(total_steps: int, start_step: int) -> Any:
        if not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, leave=False)

    @staticmethod
    def _tensorboard(directory: str | None) -> Any:
        if not directory:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("--tensorboard_dir needs the tensorboard package (pip install tensorboard); skipped")
            return None
        return SummaryWriter(directory)

    def elapsed(self) -> float:
        """Seconds since the window started; starts the next window."""
        now = time.perf_counter()
        elapsed, self.window_start = now - self.window_start, now
        return max(elapsed, 1e-9)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def report(self, r: Report) -> None:
        if not self.enabled:
            return
        self._write(format_report(r))
        self._scalars(r.step, {"train/loss": r.loss, "train/lr": r.lr, "train/grad_norm": r.grad_norm,
                               "train/tokens_per_s": r.tokens_per_s, "train/real_tokens_per_s": r.real_tokens_per_s})

    def report_eval(self, step: int, loss: float, tokens: int) -> None:
        if not self.enabled:
            return
        self._write(format_eval(step, loss, tokens))
        self._scalars(step, {"eval/loss": loss, "eval/perplexity": perplexity(loss)})

    def info(self, message: str) -> None:
        if self.enabled:
            self._write(message)

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        logger.info(line)
        if self.bar is not None:
            self.bar.refresh()

    def _scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
