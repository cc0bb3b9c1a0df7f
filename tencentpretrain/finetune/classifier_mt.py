"""Multi-task classification: ``finetune/run_classifier_mt.py`` and ``inference/run_classifier_mt_infer.py``.

One encoder, one head per task. ``--dataset_path_list DIR1 DIR2 ...`` names one directory per task, each holding
``train.tsv`` and ``dev.tsv`` in the classifier's format (header ``label<TAB>text_a[<TAB>text_b]``); a task's
number of labels is counted in its ``train.tsv``. Task ``i``'s head is ``output_layers_1.i`` (tanh) then
``output_layers_2.i`` (the original's keys). Every batch holds examples of one task; the batches of all tasks are
shuffled together each epoch. Each task's dev set is evaluated after every epoch and the model after the last
epoch is saved, as the original did.

Predictions (``run_classifier_mt_infer.py --labels_num_list N1 N2 ...``): one line per example with every
task's label joined by ``|`` (``1|0``); ``--output_logits`` / ``--output_prob`` add the columns ``logits`` and
``prob``, each task's values space-separated (4 decimals) and the tasks joined by ``|``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.atomic import atomic_path
from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.finetune.classifier import collate_for, count_labels, evaluate_classifier, read_classification
from tencentpretrain.finetune.data import Example, batches, require_examples
from tencentpretrain.finetune.loop import Evaluate, fit, log_file, seed_run, to_device
from tencentpretrain.finetune.model import TaskModel, TaskOutput, build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    AdversarialOptions,
    FinetuneOptimConfig,
    FinetuneOptions,
    InferOptions,
    finetune_parser,
    infer_parser,
    parse_run,
)
from tencentpretrain.layers.pooling import pool

logger = logging.getLogger("tencentpretrain.finetune")

DEFAULT_OUTPUT = "models/multitask_classifier_model.bin"


class MultitaskClassifier(TaskModel):
    """A shared encoder with one classification head per task, under the original's keys
    ``output_layers_1.<task>`` and ``output_layers_2.<task>``."""

    head_reads_padding = False  # pooling reads real positions only

    def __init__(self, config: ModelConfig, vocab_size: int, *, labels_num_list: Sequence[int]) -> None:
        super().__init__(config, vocab_size)
        if not labels_num_list:
            raise ConfigError("a multi-task classifier needs at least one task (--labels_num_list / "
                              "--dataset_path_list)")
        self.labels_num_list = list(labels_num_list)
        self.pooling = config.pooling
        self.output_layers_1 = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size)
                                             for _ in labels_num_list)
        self.output_layers_2 = nn.ModuleList(nn.Linear(config.hidden_size, n) for n in labels_num_list)

    def pooled(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encode(batch["src"], batch["seg"])
        return pool(hidden, batch["seg"] > 0, self.pooling)  # (B, H)

    def head(self, pooled: torch.Tensor, task: int) -> torch.Tensor:
        return self.output_layers_2[task](torch.tanh(self.output_layers_1[task](pooled)))  # (B, labels_num[task])

    def forward(self, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """batch: ``src``, ``seg`` (B, T), ``task`` (B,) one task id for the whole batch; optional ``label``."""
        task = batch_task(batch)
        logits = self.head(self.pooled(batch), task)
        loss = F.cross_entropy(logits.float(), batch["label"]) if "label" in batch else None
        return TaskOutput(loss, logits)

    @torch.no_grad()
    def all_logits(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Every task's logits for ``batch`` (``src``, ``seg``): one (B, labels_num[i]) tensor per task."""
        pooled = self.pooled(batch)
        return [self.head(pooled, task) for task in range(len(self.labels_num_list))]


def batch_task(batch: dict[str, torch.Tensor]) -> int:
    tasks = batch["task"]
    task = int(tasks[0])
    if not bool((tasks == task).all()):
        raise ValueError(f"a multi-task batch mixes tasks {sorted(set(tasks.tolist()))}; batch one task at a time")
    return task


def one_task_batches(train: Sequence[Example], batch_size: int, rng: random.Random) -> Iterable[list[Example]]:
    """Each task's examples shuffled and cut into batches, then the batches of all tasks shuffled together."""
    by_task: dict[int, list[Example]] = {}
    for example in train:
        by_task.setdefault(example["task"], []).append(example)
    packed = [chunk for task in sorted(by_task) for chunk in batches(by_task[task], batch_size, shuffle=rng)]
    rng.shuffle(packed)
    return packed


# ---------------------------------------------------------------------- fine-tuning
def add_mt_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-task classification")
    group.add_argument("--dataset_path_list", nargs="+", default=[], metavar="DIR",
                       help="one directory per task, each with train.tsv and dev.tsv")
    parser.set_defaults(output_model_path=DEFAULT_OUTPUT)


def make_optional(parser: argparse.ArgumentParser, *names: str) -> None:
    """Drop ``required`` from the flags ``names`` (the shared parser requires --train_path and --dev_path)."""
    for action in parser._actions:  # argparse has no public way to relax a required flag
        if action.dest in names:
            action.required = False


def task_files(directories: Sequence[str]) -> list[tuple[str, str]]:
    """(train.tsv, dev.tsv) of each task directory, checked to exist."""
    if not directories:
        raise ConfigError("--dataset_path_list is required: one directory per task, each with train.tsv and dev.tsv")
    files = []
    for directory in directories:
        pair = (os.path.join(directory, "train.tsv"), os.path.join(directory, "dev.tsv"))
        absent = [p for p in pair if not os.path.isfile(p)]
        if absent:
            raise ConfigError(f"--dataset_path_list {directory}: no {', '.join(absent)}; each task directory holds "
                              "train.tsv and dev.tsv")
        files.append(pair)
    return files


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_classifier_mt.py``."""
    parser = finetune_parser(__doc__, add_mt_flags)
    make_optional(parser, "train_path", "dev_path")
    run = parse_run(parser, argv)
    files = task_files(run.args.dataset_path_list)
    labels_num_list = [count_labels(train) for train, _ in files]
    run.args.train_path = " ".join(train for train, _ in files)  # named in the loop's messages
    run.args.dev_path = " ".join(dev for _, dev in files)
    options: FinetuneOptions = run.options(FinetuneOptions)
    if options.test_path:
        raise ConfigError("--test_path is not used by run_classifier_mt.py: each task's dev.tsv is evaluated")
    with log_file(options.log_path):
        seed_run(options)
        model = build_task_model(MultitaskClassifier, run.model_config, run.tokenizer.vocab_size,
                                 options.pretrained_model_path, labels_num_list=labels_num_list)
        collate = collate_for(run.tokenizer)

        def read(task: int, path: str) -> list[Example]:
            examples = read_classification(path, run.tokenizer, options.seq_length,
                                           labels_num=labels_num_list[task])
            return [{**e, "task": task} for e in examples]

        train = [e for task, (path, _) in enumerate(files) for e in read(task, path)]

        def dev() -> list[Example]:
            return [e for task, (_, path) in enumerate(files) for e in read(task, path)]

        fit(model, train, dev, None, collate=collate,
            evaluate=task_evaluator(files, labels_num_list, options.batch_size, collate), options=options,
            optim=run.options(FinetuneOptimConfig), adv=run.options(AdversarialOptions), keep="last",
            batcher=one_task_batches)


def task_evaluator(files: Sequence[tuple[str, str]], labels_num_list: Sequence[int], batch_size: int,
                   collate) -> Evaluate:
    """Evaluate each task's dev examples (the classifier's report, after a ``Dataset id`` line); the score is
    the mean accuracy."""
    def evaluate(model: TaskModel, dev: Sequence[Example]) -> float:
        scores = []
        for task, (_, dev_path) in enumerate(files):
            logger.info("Dataset id: %d (%s)", task, dev_path)
            scores.append(evaluate_classifier(model, [e for e in dev if e["task"] == task], batch_size, collate,
                                              labels_num=labels_num_list[task]))
        return sum(scores) / len(scores)
    return evaluate


# ---------------------------------------------------------------------- inference
def add_mt_infer_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-task classification")
    group.add_argument("--labels_num_list", nargs="+", type=int, default=[],
                       help="the number of labels of each task, in the order of fine-tuning's --dataset_path_list")
    group.add_argument("--output_logits", action="store_true", help="also write every task's logits")
    group.add_argument("--output_prob", action="store_true", help="also write every task's probabilities")


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_classifier_mt_infer.py``."""
    run = parse_run(infer_parser(__doc__, add_mt_infer_flags), argv)
    options: InferOptions = run.options(InferOptions)
    labels_num_list = run.args.labels_num_list
    if not labels_num_list or min(labels_num_list) < 1:
        raise ConfigError("--labels_num_list is required: each task's number of labels (>= 1), in fine-tuning order")
    model = MultitaskClassifier(run.model_config, run.tokenizer.vocab_size, labels_num_list=labels_num_list)
    load_finetuned_weights(model, options.load_model_path)
    examples = read_classification(options.test_path, run.tokenizer, options.seq_length, labels_num=None,
                                   with_labels=False)
    require_examples(options.test_path, examples)
    write_mt_predictions(options.prediction_path, model, examples, options.batch_size, collate_for(run.tokenizer),
                         logits=run.args.output_logits, prob=run.args.output_prob)


def write_mt_predictions(path: str, model: MultitaskClassifier, examples: Sequence[Example], batch_size: int,
                         collate, *, logits: bool, prob: bool) -> None:
    """The original's multi-task prediction TSV (tasks joined by ``|``), written atomically."""
    write_mt_prediction_lines(path, predict_all_tasks(model, examples, batch_size, collate), logits=logits, prob=prob)


def predict_all_tasks(model: MultitaskClassifier, examples: Sequence[Example], batch_size: int,
                      collate) -> Iterator[list[torch.Tensor]]:
    """Per batch, every task's logits on the CPU ((B, labels_num[i]) each), in example order."""
    device = next(model.parameters()).device
    model.eval()
    for chunk in batches(examples, batch_size):
        yield [t.float().cpu() for t in model.all_logits(to_device(collate(chunk), device))]


def write_mt_prediction_lines(path: str, logits_batches: Iterable[list[torch.Tensor]], *, logits: bool,
                              prob: bool) -> None:
    header = ["label"] + ["logits"] * logits + ["prob"] * prob
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for per_task in logits_batches:
            probs = [torch.softmax(t, dim=-1) for t in per_task]
            for row in range(per_task[0].shape[0]):
                fields = ["|".join(str(int(t[row].argmax())) for t in per_task)]
                if logits:
                    fields.append(_joined(t[row] for t in per_task))
                if prob:
                    fields.append(_joined(p[row] for p in probs))
                f.write("\t".join(fields) + "\n")


def _joined(rows: Iterable[torch.Tensor]) -> str:
    return "|".join(" ".join(f"{v:.4f}" for v in row.tolist()) for row in rows)

