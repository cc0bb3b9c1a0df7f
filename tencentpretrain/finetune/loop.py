"""The fine-tuning loop shared by every task: epochs over the training set, evaluation on the dev set after each,
the best model saved, and the test set evaluated with it at the end (the original's ``run_*.py`` main loop)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.cli import dataclass_from_args
from tencentpretrain.errors import DataError
from tencentpretrain.finetune.adversarial import fgm_step, pgd_step
from tencentpretrain.finetune.data import Example, batches
from tencentpretrain.finetune.model import TaskModel, TaskOutput, load_finetuned_weights
from tencentpretrain.finetune.options import AdversarialOptions, FinetuneOptimConfig, FinetuneOptions
from tencentpretrain.layers.dropout import use_torch_dropout
from tencentpretrain.registry import SCHEDULERS
from tencentpretrain.training.optim import build_optimizer

logger = logging.getLogger("tencentpretrain.finetune")

Collate = Callable[[Sequence[Example]], dict[str, torch.Tensor]]
Evaluate = Callable[[TaskModel, Sequence[Example]], float]  # logs its report, returns the score to maximise
Batcher = Callable[[Sequence[Example], int, random.Random], Iterable[list[Example]]]  # (train, batch_size, rng)


@dataclass(frozen=True)
class FitResult:
    best_dev: float
    best_epoch: int
    test: float | None
    steps: int


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch, as the original's ``set_seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_run(options: FinetuneOptions) -> None:
    """Seed everything (``set_seed``) and choose how dropout masks are drawn (``--original_dropout``)."""
    set_seed(options.seed)
    use_torch_dropout(options.original_dropout)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def training_steps(instances: int, options: FinetuneOptions) -> int:
    """The original's schedule length: int(instances * epochs / batch_size) + 1."""
    return int(instances * options.epochs_num / options.batch_size) + 1


def finetune_scheduler(optimizer: torch.optim.Optimizer, optim: FinetuneOptimConfig,
                       steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule ``optim.scheduler`` with the original's fractional warm-up: ``steps * warmup`` is not rounded
    down (a 5-step run warms up over 0.5 steps, so its first step has learning rate 0, as in the original; the
    pretraining schedule rounds to whole steps)."""
    make = SCHEDULERS.get(optim.scheduler)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, make(steps * optim.warmup, steps, optim))


def train_step(model: TaskModel, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               scheduler, optim: FinetuneOptimConfig, adv: AdversarialOptions | None) -> float:
    """One optimizer step on ``batch``; returns the (clean) loss."""
    def backward() -> torch.Tensor:
        output: TaskOutput = model(batch)
        output.loss.backward()
        return output.loss

    loss = backward()
    if not torch.isfinite(loss):
        raise DataError(f"the training loss is {loss.item()}; lower --learning_rate, or check the data and the "
                        "pretrained model")
    if adv is not None and adv.use_adv:
        if adv.adv_type == "fgm":
            fgm_step(model, backward, adv.fgm_epsilon)
        else:
            pgd_step(model, backward, k=adv.pgd_k, epsilon=adv.pgd_epsilon, alpha=adv.pgd_alpha)
    if optim.max_grad_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), optim.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


class Stepper(Protocol):
    """How ``fit`` trains on one batch and saves the model (the default: ``LocalStepper``; DeepSpeed has its own)."""

    def step(self, examples: list[Example]) -> float:
        """One optimizer step on ``examples``; returns the loss."""

    def save(self, path: str) -> None:
        """Save the model's weights to ``path`` (atomically)."""


class LocalStepper:
    """One process: the task model with the fine-tuning optimizer and schedule, on ``device``."""

    def __init__(self, model: TaskModel, *, collate: Collate, optim: FinetuneOptimConfig,
                 adv: AdversarialOptions | None, steps: int, device: torch.device) -> None:
        self.model, self.collate, self.optim, self.adv, self.device = model, collate, optim, adv, device
        self.optimizer = build_optimizer(model, optim)
        self.scheduler = finetune_scheduler(self.optimizer, optim, steps)

    def step(self, examples: list[Example]) -> float:
        return train_step(self.model, to_device(self.collate(examples), self.device), self.optimizer,
                          self.scheduler, self.optim, self.adv)

    def save(self, path: str) -> None:
        save_checkpoint(self.model, path)


def default_batcher(train: list[Example], batch_size: int, rng: random.Random) -> Iterable[list[Example]]:
    """Shuffle ``train`` IN PLACE, then cut it into batches, as the original did: each epoch's order is a shuffle
    of the previous epoch's, so with the same seed the batches are the original's."""
    rng.shuffle(train)
    return batches(train, batch_size)


def train_epoch(stepper: Stepper, order: list[Example], epoch: int, *, options: FinetuneOptions,
                batcher: Batcher = default_batcher, rng: random.Random, log_prefix: str = "") -> int:
    """One pass over ``order`` (which ``batcher`` may reorder in place), with the original's "Avg loss" line every
    ``options.report_steps`` steps; returns the number of steps. The model is in training mode."""
    total_loss, steps = 0.0, 0
    for steps, examples in enumerate(batcher(order, options.batch_size, rng), start=1):
        total_loss += stepper.step(examples)
        if steps % options.report_steps == 0:
            logger.info("%sEpoch id: %d, Training steps: %d, Avg loss: %.3f", log_prefix, epoch, steps,
                        total_loss / options.report_steps)
            total_loss = 0.0
    return steps


@contextlib.contextmanager
def log_file(path: str | None) -> Iterator[None]:
    """Copy the log to ``path`` (--log_path) for the duration of the run."""
    if not path:
        yield
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def fit(model: TaskModel, train: Sequence[Example], dev: Callable[[], Sequence[Example]] | None,
        test: Callable[[], Sequence[Example]] | None, *, collate: Collate, evaluate: Evaluate | None,
        options: FinetuneOptions, optim: FinetuneOptimConfig, adv: AdversarialOptions | None = None,
        device: torch.device | None = None, keep: Literal["best", "last", "none"] = "best",
        stepper: Stepper | None = None, batcher: Batcher = default_batcher, log_prefix: str = "") -> FitResult:
    """Fine-tune ``model`` for ``options.epochs_num`` epochs; keep the epoch that scores best on ``dev()`` in
    ``options.output_model_path``; then score ``test()`` with it. ``dev``/``test`` read their file when called
    (the original re-read the dev file after every epoch).

    Variants for the other drivers: ``keep="last"`` saves the model after the last epoch (``dev`` may then be
    None: no evaluation), ``keep="none"`` saves nothing; ``stepper`` replaces the local optimizer step (DeepSpeed),
    ``batcher`` the shuffled batches (one task per batch), ``log_prefix`` starts the loss lines ("Fold id: 0, ").
    """
    if not train:
        raise DataError(f"{options.train_path}: no training examples")
    if dev is None and keep == "best":
        raise ValueError("fit(keep='best') needs a dev set")
    steps = training_steps(len(train), options)
    model.original_mask_width = options.seq_length if options.original_dropout else None
    if stepper is None:
        device = device or default_device()
        model.to(device)
        stepper = LocalStepper(model, collate=collate, optim=optim, adv=adv, steps=steps, device=device)
    shuffle = random.Random(options.seed)  # the original shuffled with Python's random, seeded by --seed
    order = list(train)  # reordered in place every epoch
    logger.info("Batch size: %d", options.batch_size)
    logger.info("The number of training instances: %d", len(train))
    logger.info("Start training.")
    best, best_epoch, done = -math.inf, 0, 0
    for epoch in range(1, options.epochs_num + 1):
        model.train()
        done += train_epoch(stepper, order, epoch, options=options, batcher=batcher, rng=shuffle,
                            log_prefix=log_prefix)
        score = evaluate(model, dev()) if dev is not None else math.nan
        if keep == "best" and score > best:
            best, best_epoch = score, epoch
            stepper.save(options.output_model_path)
        elif keep != "best":
            best, best_epoch = score, epoch
    if keep == "last":
        stepper.save(options.output_model_path)
    test_score = None
    if test is not None:
        logger.info("Test set evaluation.")
        if keep != "none":
            load_finetuned_weights(model, options.output_model_path)
        test_score = evaluate(model, test())
    return FitResult(best, best_epoch, test_score, done)


def fit_on_files(model: TaskModel, args: argparse.Namespace, read: Callable[[str], Sequence[Example]], *,
                 collate: Collate, evaluate: Evaluate, train: Sequence[Example] | None = None,
                 **fit_options: Any) -> FitResult:
    """``fit`` on the files of ``--train_path`` / ``--dev_path`` / ``--test_path``, each read with ``read(path)``
    (or the training examples given as ``train``), with the optimizer and adversarial flags of ``args``."""
    options = dataclass_from_args(FinetuneOptions, args)
    return fit(model, read(options.train_path) if train is None else train, lambda: read(options.dev_path),
               (lambda: read(options.test_path)) if options.test_path else None, collate=collate,
               evaluate=evaluate, options=options, optim=dataclass_from_args(FinetuneOptimConfig, args),
               adv=dataclass_from_args(AdversarialOptions, args), **fit_options)


@torch.no_grad()
def predict(model: TaskModel, examples: Sequence[Example], batch_size: int, collate: Collate,
            device: torch.device | None = None) -> Iterator[tuple[list[Example], torch.Tensor]]:
    """(examples, logits on the CPU) per batch, in order, with the model in eval mode."""
    device = device or next(model.parameters()).device
    model.eval()
    for chunk in batches(examples, batch_size):
        batch = to_device(collate(chunk), device)
        yield chunk, model(batch).logits.float().cpu()
