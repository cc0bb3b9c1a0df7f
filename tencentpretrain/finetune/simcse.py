"""SimCSE sentence embeddings: ``finetune/run_simcse.py`` (the original has no inference script for it).

Training data: a TSV whose header has ``text_a``. Without a ``label`` column (unsupervised SimCSE) each text is
paired with itself, and the two encodings differ only by dropout (so keep ``dropout`` > 0); with a ``label``
column (supervised), ``text_a`` is paired with ``text_b`` (``text_a`` when absent) and the label is not used.
Each text is encoded on its own as ``[CLS] text [SEP]`` by the one encoder and pooled (``--pooling``); the loss
is the cross-entropy of each pair against the other pairs of the batch over cosine similarities divided by
``--temperature``. Dev data: ``label<TAB>text_a<TAB>text_b`` with a similarity score; the report is the
original's ``Spearman's correlation:`` line between the labels and the pairs' cosine similarities, every
``--eval_steps`` steps and at the end of each epoch, and the best model is saved. The model has no head: its
keys are the encoder's (``embedding.*``, ``encoder.*``), so it loads wherever a pretrained encoder does.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.finetune.data import Example, SpecialIds, encode_pair, pad_batch, read_tsv
from tencentpretrain.finetune.loop import (
    default_device,
    log_file,
    predict,
    seed_run,
    to_device,
    train_step,
    training_steps,
)
from tencentpretrain.finetune.metrics import spearman
from tencentpretrain.finetune.model import TaskModel, TaskOutput, build_task_model
from tencentpretrain.finetune.options import FinetuneOptimConfig, FinetuneOptions, finetune_parser, parse_run
from tencentpretrain.finetune.regression import real_label
from tencentpretrain.layers.pooling import pool
from tencentpretrain.tokenizers import Tokenizer
from tencentpretrain.training.optim import build_optimizer, build_scheduler

logger = logging.getLogger("tencentpretrain.finetune")


class SimCSE(TaskModel):
    """The encoder alone; ``forward`` returns the in-batch contrastive loss and each pair's cosine similarity."""

    def __init__(self, config: ModelConfig, vocab_size: int, *, temperature: float = 0.05) -> None:
        super().__init__(config, vocab_size)
        self.pooling = config.pooling
        self.temperature = temperature

    def features(self, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """(B, T) -> the pooled sentence vectors (B, H)."""
        return pool(self.encode(src, seg), seg > 0, self.pooling)

    def forward(self, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """batch: ``src_a``, ``seg_a``, ``src_b``, ``seg_b``. Logits: cos(a_i, b_i) (B,)."""
        u = F.normalize(self.features(batch["src_a"], batch["seg_a"]).float(), dim=-1)
        v = F.normalize(self.features(batch["src_b"], batch["seg_b"]).float(), dim=-1)
        similarity = u @ v.T  # (B, B)
        targets = torch.arange(similarity.shape[0], device=similarity.device)
        return TaskOutput(F.cross_entropy(similarity / self.temperature, targets), similarity.diagonal())


# ---------------------------------------------------------------------- data
def read_simcse(path: str, tokenizer: Tokenizer, seq_length: int, *, need_labels: bool = False) -> list[Example]:
    """Pairs ``src_a``/``seg_a``, ``src_b``/``seg_b`` (and ``label`` when the file has one): (text_a, text_b or
    text_a) when labelled, else (text_a, text_a), as the original read them."""
    specials = SpecialIds.of(tokenizer)
    rows = read_tsv(path, ("label", "text_a") if need_labels else ("text_a",))
    examples = []
    for row in rows:
        labelled = "label" in row.fields
        text_a = row.get("text_a")
        text_b = row.fields.get("text_b", text_a) if labelled else text_a
        src_a, seg_a = encode_pair(tokenizer, specials, text_a, None, seq_length)
        src_b, seg_b = encode_pair(tokenizer, specials, text_b, None, seq_length)
        example: Example = {"src_a": src_a, "seg_a": seg_a, "src_b": src_b, "seg_b": seg_b}
        if labelled:
            example["label"] = real_label(row)
        examples.append(example)
    return examples


def collate_for(tokenizer: Tokenizer):
    pad_id = SpecialIds.of(tokenizer).pad
    return lambda examples: pad_batch([{k: v for k, v in e.items() if k != "label"} for e in examples],
                                      {"src_a": pad_id, "src_b": pad_id})


def evaluate_simcse(model: SimCSE, examples: Sequence[Example], batch_size: int, collate) -> float:
    """Spearman's correlation between the labels and the pairs' cosine similarities (the original's line)."""
    if len(examples) < 2:
        raise DataError("the SimCSE dev set needs at least 2 labelled pairs (a correlation is reported)")
    similarities: list[float] = []
    for _, cosine in predict(model, examples, batch_size, collate):
        similarities += cosine.tolist()
    correlation = spearman([e["label"] for e in examples], similarities)
    logger.info("Spearman's correlation: %.4f", correlation)
    return -1.0 if math.isnan(correlation) else correlation


# ---------------------------------------------------------------------- script
def add_simcse_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SimCSE")
    group.add_argument("--temperature", type=float, default=0.05, help="divides the cosine similarities")
    group.add_argument("--eval_steps", type=int, default=200, help="evaluate on the dev set every this many steps "
                       "(and at the end of each epoch)")


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_simcse.py``."""
    run = parse_run(finetune_parser(__doc__, add_simcse_flags, adversarial=False), argv)
    options: FinetuneOptions = run.options(FinetuneOptions)
    args = run.args
    if args.temperature <= 0 or args.eval_steps < 1:
        raise ConfigError("--temperature must be > 0 and --eval_steps >= 1")
    with log_file(options.log_path):
        seed_run(options)
        model = build_task_model(SimCSE, run.model_config, run.tokenizer.vocab_size, options.pretrained_model_path,
                                 temperature=args.temperature)
        train_simcse(model, run.tokenizer, options, run.options(FinetuneOptimConfig), args.eval_steps)


def train_simcse(model: SimCSE, tokenizer: Tokenizer, options: FinetuneOptions, optim: FinetuneOptimConfig,
                 eval_steps: int) -> float:
    """The original's loop: epochs of in-batch contrastive steps; the dev set is scored every ``eval_steps``
    steps and after each epoch's last step, and the best model is saved (atomically). Returns the best score."""
    train = read_simcse(options.train_path, tokenizer, options.seq_length)
    if not train:
        raise DataError(f"{options.train_path}: no training examples")
    collate = collate_for(tokenizer)
    device = default_device()
    model.to(device)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, training_steps(len(train), options))
    shuffle = random.Random(options.seed)
    steps_per_epoch = math.ceil(len(train) / options.batch_size)
    logger.info("Batch size: %d", options.batch_size)
    logger.info("The number of training instances: %d", len(train))
    logger.info("Start training.")
    best = -math.inf
    for epoch in range(1, options.epochs_num + 1):
        order = list(train)
        shuffle.shuffle(order)
        total_loss = 0.0
        for i in range(steps_per_epoch):
            model.train()
            chunk = order[i * options.batch_size:(i + 1) * options.batch_size]
            total_loss += train_step(model, to_device(collate(chunk), device), optimizer, scheduler, optim, None)
            if (i + 1) % options.report_steps == 0:
                logger.info("Epoch id: %d, Training steps: %d, Avg loss: %.3f", epoch, i + 1,
                            total_loss / options.report_steps)
                total_loss = 0.0
            if (i + 1) % eval_steps == 0 or i + 1 == steps_per_epoch:
                dev = read_simcse(options.dev_path, tokenizer, options.seq_length, need_labels=True)
                result = evaluate_simcse(model, dev, options.batch_size, collate)
                logger.info("Epoch id: %d, Training steps: %d, Evaluate result: %s, Best result: %s", epoch, i + 1,
                            result, best)
                if result > best:
                    best = result
                    save_checkpoint(model, options.output_model_path)
                    logger.info("It is the best model until now. Save it to %s", options.output_model_path)
    return best
