"""The fine-tuning loop shared by every task: epochs over the training set, evaluation on the dev set after each,
the best model saved, and the test set evaluated with it at the end (the original's ``run_*.py`` main loop)."""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.errors import DataError
from tencentpretrain.finetune.adversarial import fgm_step, pgd_step
from tencentpretrain.finetune.data import Example, batches
from tencentpretrain.finetune.model import TaskModel, TaskOutput, load_finetuned_weights
from tencentpretrain.finetune.options import AdversarialOptions, FinetuneOptimConfig, FinetuneOptions
from tencentpretrain.registry import SCHEDULERS
from tencentpretrain.training.optim import build_optimizer

logger = logging.getLogger("tencentpretrain.finetune")

Collate = Callable[[Sequence[Example]], dict[str, torch.Tensor]]
Evaluate = Callable[[TaskModel, Sequence[Example]], float]  # logs its report, returns the score to maximise


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


def train_epoch(model: TaskModel, train: list[Example], epoch: int, *, collate: Collate,
                optimizer: torch.optim.Optimizer, scheduler, options: FinetuneOptions, optim: FinetuneOptimConfig,
                adv: AdversarialOptions | None, shuffle: random.Random | None, device: torch.device) -> int:
    """One pass over ``train`` in batches of ``options.batch_size``, with the original's "Avg loss" line every
    ``options.report_steps`` steps; returns the number of steps. ``shuffle`` shuffles ``train`` IN PLACE first, as
    the original did: each epoch's order is a shuffle of the previous epoch's, so with the same seed the batches
    are the original's."""
    if shuffle is not None:
        shuffle.shuffle(train)
    model.train()
    total_loss, steps = 0.0, 0
    for steps, examples in enumerate(batches(train, options.batch_size), start=1):
        total_loss += train_step(model, to_device(collate(examples), device), optimizer, scheduler, optim, adv)
        if steps % options.report_steps == 0:
            logger.info("Epoch id: %d, Training steps: %d, Avg loss: %.3f", epoch, steps,
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


def fit(model: TaskModel, train: Sequence[Example], dev: Callable[[], Sequence[Example]],
        test: Callable[[], Sequence[Example]] | None, *, collate: Collate, evaluate: Evaluate,
        options: FinetuneOptions, optim: FinetuneOptimConfig, adv: AdversarialOptions | None = None,
        device: torch.device | None = None) -> FitResult:
    """Fine-tune ``model`` for ``options.epochs_num`` epochs; keep the epoch that scores best on ``dev()`` in
    ``options.output_model_path``; then score ``test()`` with it. ``dev``/``test`` read their file when called
    (the original re-read the dev file after every epoch)."""
    if not train:
        raise DataError(f"{options.train_path}: no training examples")
    device = device or default_device()
    model.to(device)
    steps = training_steps(len(train), options)
    optimizer = build_optimizer(model, optim)
    scheduler = finetune_scheduler(optimizer, optim, steps)
    shuffle = random.Random(options.seed)  # the original shuffled with Python's random, seeded by --seed
    order = list(train)  # shuffled in place every epoch
    logger.info("Batch size: %d", options.batch_size)
    logger.info("The number of training instances: %d", len(train))
    logger.info("Start training.")
    best, best_epoch, done = -math.inf, 0, 0
    for epoch in range(1, options.epochs_num + 1):
        done += train_epoch(model, order, epoch, collate=collate, optimizer=optimizer, scheduler=scheduler,
                            options=options, optim=optim, adv=adv, shuffle=shuffle, device=device)
        score = evaluate(model, dev())
        if score > best:
            best, best_epoch = score, epoch
            save_checkpoint(model, options.output_model_path)
    test_score = None
    if test is not None:
        logger.info("Test set evaluation.")
        load_finetuned_weights(model, options.output_model_path)
        test_score = evaluate(model, test())
    return FitResult(best, best_epoch, test_score, done)


@torch.no_grad()
def predict(model: TaskModel, examples: Sequence[Example], batch_size: int, collate: Collate,
            device: torch.device | None = None) -> Iterator[tuple[list[Example], torch.Tensor]]:
    """(examples, logits on the CPU) per batch, in order, with the model in eval mode."""
    device = device or next(model.parameters()).device
    model.eval()
    for chunk in batches(examples, batch_size):
        batch = to_device(collate(chunk), device)
        yield chunk, model(batch).logits.float().cpu()
