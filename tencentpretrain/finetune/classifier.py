"""Text classification: ``finetune/run_classifier.py`` and ``inference/run_classifier_infer.py``.

Data: a TSV with the header ``label<TAB>text_a`` (single sentence) or ``label<TAB>text_a<TAB>text_b`` (pair);
``--soft_targets`` also reads a ``logits`` column (space-separated teacher logits, for distillation). The input is
``[CLS] text_a [SEP] (text_b [SEP])``; the pooled state (``--pooling``, default the [CLS] position) goes through
``tanh(output_layer_1)`` and ``output_layer_2`` to ``labels_num`` logits. Predictions: a TSV with the column
``label``, plus ``logits`` and ``prob`` (space-separated) with ``--output_logits`` / ``--output_prob``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.atomic import atomic_path
from tencentpretrain.config import ModelConfig
from tencentpretrain.finetune.data import (
    Example,
    SpecialIds,
    TsvRow,
    encode_pair,
    pad_batch,
    parse_label,
    read_tsv,
    require_examples,
)
from tencentpretrain.finetune.loop import fit_on_files, log_file, predict, seed_run
from tencentpretrain.finetune.metrics import confusion_matrix, log_classification_report
from tencentpretrain.finetune.model import TaskModel, TaskOutput, build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    FinetuneOptions,
    InferOptions,
    ParsedRun,
    finetune_parser,
    infer_parser,
    parse_run,
    required_labels_num,
)
from tencentpretrain.layers.pooling import pool
from tencentpretrain.tokenizers import Tokenizer

logger = logging.getLogger("tencentpretrain.finetune")


class Classifier(TaskModel):
    """Sentence (pair) classifier; head keys ``output_layer_1``, ``output_layer_2`` (the original's)."""

    head_reads_padding = False  # pooling and tagging read real positions only

    def __init__(self, config: ModelConfig, vocab_size: int, *, labels_num: int, soft_alpha: float = 0.5) -> None:
        super().__init__(config, vocab_size)
        self.labels_num = labels_num
        self.pooling = config.pooling
        self.soft_alpha = soft_alpha
        self.output_layer_1 = nn.Linear(config.hidden_size, config.hidden_size)
        self.output_layer_2 = nn.Linear(config.hidden_size, labels_num)

    def forward(self, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """batch: ``src``, ``seg`` (B, T); optional ``label`` (B,) and ``soft_label`` (B, labels_num)."""
        hidden = self.encode(batch["src"], batch["seg"])
        pooled = pool(hidden, batch["seg"] > 0, self.pooling)  # (B, H)
        logits = self.output_layer_2(torch.tanh(self.output_layer_1(pooled)))  # (B, labels_num)
        if "label" not in batch:
            return TaskOutput(None, logits)
        loss = F.cross_entropy(logits.float(), batch["label"])
        if "soft_label" in batch:
            loss = self.soft_alpha * F.mse_loss(logits.float(), batch["soft_label"]) + (1 - self.soft_alpha) * loss
        return TaskOutput(loss, logits)


# ---------------------------------------------------------------------- data
def count_labels(path: str) -> int:
    """The number of distinct labels in a training TSV (the original's ``count_labels_num``)."""
    return len({parse_label(row) for row in read_tsv(path, ("label", "text_a"))})


def read_classification(path: str, tokenizer: Tokenizer, seq_length: int, *, labels_num: int | None,
                        with_labels: bool = True, soft_targets: bool = False,
                        label_of: Callable[[TsvRow], Any] | None = None, required: Sequence[str] = (),
                        extra: Callable[[TsvRow], Example] | None = None) -> list[Example]:
    """Examples of a classification TSV: ``src``, ``seg``, and ``label`` (and ``soft_label``) when read with
    labels. Variants of the task change the label (``label_of(row)``, default an integer class id below
    ``labels_num``), require more columns (``required``) and add fields to each example (``extra(row)``)."""
    specials = SpecialIds.of(tokenizer)
    label_of = label_of or (lambda row: parse_label(row, labels_num))
    required = (("label", "text_a") if with_labels else ("text_a",)) + tuple(required)
    rows = read_tsv(path, required)
    use_soft = soft_targets and rows and "logits" in rows[0].fields
    examples = []
    for row in rows:
        text_b = row.fields.get("text_b")
        src, seg = encode_pair(tokenizer, specials, row.get("text_a"), text_b, seq_length)
        example: Example = {"src": src, "seg": seg}
        if with_labels:
            example["label"] = label_of(row)
        if extra is not None:
            example.update(extra(row))
        if use_soft:
            example["soft_label"] = _soft_label(row, labels_num)
        examples.append(example)
    return examples


def _soft_label(row: TsvRow, labels_num: int | None) -> list[float]:
    try:
        values = [float(v) for v in row.get("logits").split(" ")]
    except ValueError:
        raise row.error("the logits column holds space-separated numbers") from None
    if labels_num is not None and len(values) != labels_num:
        raise row.error(f"{len(values)} logits for {labels_num} labels")
    return values


def collate_for(tokenizer: Tokenizer):
    pad_id = SpecialIds.of(tokenizer).pad
    return lambda examples: pad_batch(examples, {"src": pad_id})


def evaluate_classifier(model: TaskModel, examples: Sequence[Example], batch_size: int, collate, *,
                        labels_num: int | None = None) -> float:
    """Accuracy of ``model`` on labelled ``examples``, with the original's report. ``labels_num`` defaults to
    the model's (a multi-task model names the one of the task it is evaluated on)."""
    return log_classification_report(logger, classifier_confusion(model, examples, batch_size, collate,
                                                                  labels_num=labels_num))


def classifier_confusion(model: TaskModel, examples: Sequence[Example], batch_size: int, collate, *,
                         labels_num: int | None = None) -> torch.Tensor:
    """The (labels_num, labels_num) confusion matrix (rows: predicted, columns: gold) of ``model`` on
    ``examples``."""
    labels_num = labels_num or model.labels_num
    confusion = torch.zeros(labels_num, labels_num, dtype=torch.long)
    for chunk, logits in predict(model, examples, batch_size, collate):
        gold = torch.tensor([e["label"] for e in chunk])
        confusion += confusion_matrix(logits.argmax(-1), gold, labels_num)
    return confusion


# ---------------------------------------------------------------------- scripts
def add_classifier_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("classification")
    group.add_argument("--soft_targets", action="store_true",
                       help="also fit the teacher logits of the train set's 'logits' column (distillation)")
    group.add_argument("--soft_alpha", type=float, default=0.5,
                       help="weight of the soft-target (MSE) loss against the label loss")


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_classifier.py``."""
    run = parse_run(finetune_parser(__doc__, add_classifier_flags), argv,
                    lambda args: {"labels_num": args.labels_num or count_labels(args.train_path)})
    finetune_classifier(run)


def finetune_classifier(run: ParsedRun) -> None:
    options: FinetuneOptions = run.options(FinetuneOptions)
    args, labels_num = run.args, run.model_config.labels_num
    with log_file(options.log_path):
        seed_run(options)
        model = build_task_model(Classifier, run.model_config, run.tokenizer.vocab_size,
                                 options.pretrained_model_path, labels_num=labels_num, soft_alpha=args.soft_alpha)

        def read(path: str, soft: bool = False) -> list[Example]:
            return read_classification(path, run.tokenizer, options.seq_length, labels_num=labels_num,
                                       soft_targets=soft)

        collate = collate_for(run.tokenizer)
        fit_on_files(model, run.args, read, train=read(options.train_path, args.soft_targets), collate=collate,
                     evaluate=lambda m, ex: evaluate_classifier(m, ex, options.batch_size, collate))


def add_classifier_infer_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("classification")
    group.add_argument("--output_logits", action="store_true", help="also write the logits of every label")
    group.add_argument("--output_prob", action="store_true", help="also write the probability of every label")


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_classifier_infer.py``."""
    run = parse_run(infer_parser(__doc__, add_classifier_infer_flags), argv)
    options: InferOptions = run.options(InferOptions)
    labels_num = required_labels_num(run.model_config.labels_num)
    model = Classifier(run.model_config, run.tokenizer.vocab_size, labels_num=labels_num)
    load_finetuned_weights(model, options.load_model_path)
    examples = read_classification(options.test_path, run.tokenizer, options.seq_length, labels_num=labels_num,
                                   with_labels=False)
    require_examples(options.test_path, examples)
    write_class_predictions(options.prediction_path, model, examples, options.batch_size,
                            collate_for(run.tokenizer), logits=run.args.output_logits, prob=run.args.output_prob)


def write_class_predictions(path: str, model: TaskModel, examples: Sequence[Example], batch_size: int, collate,
                            *, logits: bool, prob: bool) -> None:
    """The original's prediction TSV: ``label`` [``logits``] [``prob``], one line per example; written
    atomically, so a failure leaves no partial file."""
    write_class_prediction_lines(path, (batch_logits for _, batch_logits in predict(model, examples, batch_size,
                                                                                   collate)),
                                 logits=logits, prob=prob)


def write_class_prediction_lines(path: str, logits_batches: Iterable[torch.Tensor], *, logits: bool,
                                 prob: bool) -> None:
    """The prediction TSV of ``logits_batches`` ((B, labels_num) each, in example order), written atomically."""
    header = ["label"] + ["logits"] * logits + ["prob"] * prob
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for batch_logits in logits_batches:
            probs = torch.softmax(batch_logits, dim=-1)
            for row_logits, row_prob in zip(batch_logits.tolist(), probs.tolist()):
                fields = [str(max(range(len(row_logits)), key=row_logits.__getitem__))]
                if logits:
                    fields.append(" ".join(str(v) for v in row_logits))
                if prob:
                    fields.append(" ".join(str(v) for v in row_prob))
                f.write("\t".join(fields) + "\n")
