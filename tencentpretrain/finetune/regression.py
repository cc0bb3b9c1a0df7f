"""Regression: ``finetune/run_regression.py`` and ``inference/run_regression_infer.py``.

Data: the classification TSV (``label<TAB>text_a[<TAB>text_b]``) with a real-valued ``label`` (e.g. an STS-B
similarity score). The model is the classifier's with one output: ``tanh(output_layer_1)`` then
``output_layer_2`` to a single number, fitted with the mean squared error. The dev/test report is the
original's ``Spearman corr:`` line (the epoch with the best Spearman correlation is kept), followed by a
``Pearson corr:`` line. Predictions: a TSV with the one column ``label`` holding the predicted value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tencentpretrain.atomic import atomic_path
from tencentpretrain.errors import DataError
from tencentpretrain.finetune.classifier import Classifier, collate_for, read_classification
from tencentpretrain.finetune.data import Example, TsvRow, require_examples
from tencentpretrain.finetune.loop import fit_on_files, log_file, predict, seed_run
from tencentpretrain.finetune.metrics import pearson, spearman
from tencentpretrain.finetune.model import TaskOutput, build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    FinetuneOptions,
    InferOptions,
    finetune_parser,
    infer_parser,
    parse_run,
)
from tencentpretrain.tokenizers import Tokenizer

logger = logging.getLogger("tencentpretrain.finetune")


class Regression(Classifier):
    """The classifier's model with one output (``output_layer_2``: hidden -> 1); ``label`` is a (B,) float."""

    def __init__(self, config, vocab_size: int) -> None:
        super().__init__(config, vocab_size, labels_num=1)

    def forward(self, batch: dict[str, torch.Tensor]) -> TaskOutput:
        logits = super().forward({"src": batch["src"], "seg": batch["seg"]}).logits  # (B, 1)
        if "label" not in batch:
            return TaskOutput(None, logits)
        return TaskOutput(F.mse_loss(logits.float().view(-1), batch["label"]), logits)


def real_label(row: TsvRow) -> float:
    text = row.get("label")
    try:
        value = float(text)
    except ValueError:
        raise row.error(f"the label {text!r} is not a number") from None
    if not math.isfinite(value):
        raise row.error(f"the label {text!r} is not a finite number")
    return value


def read_regression(path: str, tokenizer: Tokenizer, seq_length: int, with_labels: bool = True) -> list[Example]:
    return read_classification(path, tokenizer, seq_length, labels_num=None, with_labels=with_labels,
                               label_of=real_label)


def evaluate_regression(model: Regression, examples: Sequence[Example], batch_size: int, collate) -> float:
    """Spearman's correlation of the predictions with the labels (the original's report line), then Pearson's.
    An undefined correlation (constant predictions) is logged as nan and scores -1, the worst value."""
    predicted: list[float] = []
    for _, logits in predict(model, examples, batch_size, collate):
        predicted += logits.view(-1).tolist()
    gold = [e["label"] for e in examples]
    if len(gold) < 2:
        raise DataError("a regression evaluation set needs at least 2 examples (a correlation is reported)")
    rank_correlation = spearman(gold, predicted)
    logger.info("Spearman corr: %.4f", rank_correlation)
    logger.info("Pearson corr: %.4f", pearson(gold, predicted))
    return -1.0 if math.isnan(rank_correlation) else rank_correlation


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_regression.py``."""
    run = parse_run(finetune_parser(__doc__), argv)
    options: FinetuneOptions = run.options(FinetuneOptions)
    with log_file(options.log_path):
        seed_run(options)
        model = build_task_model(Regression, run.model_config, run.tokenizer.vocab_size,
                                 options.pretrained_model_path)

        def read(path: str) -> list[Example]:
            return read_regression(path, run.tokenizer, options.seq_length)

        collate = collate_for(run.tokenizer)
        fit_on_files(model, run.args, read, collate=collate,
                     evaluate=lambda m, ex: evaluate_regression(m, ex, options.batch_size, collate))


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_regression_infer.py``."""
    run = parse_run(infer_parser(__doc__), argv)
    options: InferOptions = run.options(InferOptions)
    model = Regression(run.model_config, run.tokenizer.vocab_size)
    load_finetuned_weights(model, options.load_model_path)
    examples = read_regression(options.test_path, run.tokenizer, options.seq_length, with_labels=False)
    require_examples(options.test_path, examples)
    collate = collate_for(run.tokenizer)
    with atomic_path(options.prediction_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("label\n")
        for _, logits in predict(model, examples, options.batch_size, collate):
            f.writelines(f"{value}\n" for value in logits.view(-1).tolist())
