"""Multi-label classification: ``finetune/run_classifier_multi_label.py`` and
``inference/run_classifier_multi_label_infer.py``.

Data: the classification TSV (``label<TAB>text_a[<TAB>text_b]``) whose ``label`` is a comma-separated list of
class ids (``0,3``). The model is the classifier's (same head keys ``output_layer_1``/``output_layer_2``) with one
independent sigmoid per label and a binary cross-entropy loss. An example counts as correct only when every label
is right (probability > 0.5 exactly for its gold labels): the original's ``Acc. (Correct/Total)`` line.
Predictions: a TSV whose ``label`` column lists the ids with probability > 0.5 (empty when none), plus ``logits``
and ``prob`` (sigmoids, space-separated) with ``--output_logits`` / ``--output_prob``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tencentpretrain.atomic import atomic_path
from tencentpretrain.finetune.classifier import Classifier, add_classifier_infer_flags, collate_for, read_classification
from tencentpretrain.finetune.data import Example, TsvRow, read_tsv, require_examples
from tencentpretrain.finetune.loop import fit_on_files, log_file, predict, seed_run
from tencentpretrain.finetune.model import TaskOutput, build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    FinetuneOptions,
    InferOptions,
    finetune_parser,
    infer_parser,
    parse_run,
    required_labels_num,
)
from tencentpretrain.tokenizers import Tokenizer

logger = logging.getLogger("tencentpretrain.finetune")


class MultilabelClassifier(Classifier):
    """The classifier's model with a sigmoid per label; ``label`` is a (B, labels_num) 0/1 float tensor."""

    def forward(self, batch: dict[str, torch.Tensor]) -> TaskOutput:
        logits = super().forward({"src": batch["src"], "seg": batch["seg"]}).logits  # (B, labels_num)
        if "label" not in batch:
            return TaskOutput(None, logits)
        return TaskOutput(F.binary_cross_entropy_with_logits(logits.float(), batch["label"]), logits)


# ---------------------------------------------------------------------- data
def label_ids(row: TsvRow) -> list[int]:
    """The class ids of a ``label`` field such as ``0,3`` (file and line named when one is not an id)."""
    text = row.get("label")
    try:
        ids = [int(v) for v in text.split(",")]
    except ValueError:
        raise row.error(f"the label {text!r} is not a comma-separated list of integer class ids") from None
    if any(i < 0 for i in ids):
        raise row.error(f"the label {text!r} holds a negative class id")
    return ids


def multi_hot(row: TsvRow, labels_num: int) -> list[float]:
    """(labels_num,) 1.0 at the row's class ids, checked against ``labels_num``."""
    target = [0.0] * labels_num
    for i in label_ids(row):
        if i >= labels_num:
            raise row.error(f"the class id {i} is outside 0..{labels_num - 1} (labels_num = {labels_num})")
        target[i] = 1.0
    return target


def count_multi_labels(path: str) -> int:
    """The number of distinct class ids in a training TSV (the original's ``count_labels_num``)."""
    return len({i for row in read_tsv(path, ("label", "text_a")) for i in label_ids(row)})


def read_multi_label(path: str, tokenizer: Tokenizer, seq_length: int, labels_num: int,
                     with_labels: bool = True) -> list[Example]:
    return read_classification(path, tokenizer, seq_length, labels_num=labels_num, with_labels=with_labels,
                               label_of=lambda row: multi_hot(row, labels_num))


def evaluate_multi_label(model: MultilabelClassifier, examples: Sequence[Example], batch_size: int,
                         collate) -> float:
    """Exact-match accuracy (every label right), logged as the original's ``Acc. (Correct/Total)`` line."""
    correct = 0
    for chunk, logits in predict(model, examples, batch_size, collate):
        gold = torch.tensor([e["label"] for e in chunk]) > 0.5
        correct += int(((torch.sigmoid(logits) > 0.5) == gold).all(-1).sum())  # the infer script's rule
    accuracy = correct / len(examples) if examples else 0.0
    logger.info("Acc. (Correct/Total): %.4f (%d/%d) ", accuracy, correct, len(examples))
    return accuracy


# ---------------------------------------------------------------------- scripts
def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_classifier_multi_label.py``."""
    run = parse_run(finetune_parser(__doc__), argv,
                    lambda args: {"labels_num": args.labels_num or count_multi_labels(args.train_path)})
    options: FinetuneOptions = run.options(FinetuneOptions)
    labels_num = run.model_config.labels_num
    with log_file(options.log_path):
        seed_run(options)
        model = build_task_model(MultilabelClassifier, run.model_config, run.tokenizer.vocab_size,
                                 options.pretrained_model_path, labels_num=labels_num)

        def read(path: str) -> list[Example]:
            return read_multi_label(path, run.tokenizer, options.seq_length, labels_num)

        collate = collate_for(run.tokenizer)
        fit_on_files(model, run.args, read, collate=collate,
                     evaluate=lambda m, ex: evaluate_multi_label(m, ex, options.batch_size, collate))


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_classifier_multi_label_infer.py``."""
    run = parse_run(infer_parser(__doc__, add_classifier_infer_flags), argv)
    options: InferOptions = run.options(InferOptions)
    labels_num = required_labels_num(run.model_config.labels_num)
    model = MultilabelClassifier(run.model_config, run.tokenizer.vocab_size, labels_num=labels_num)
    load_finetuned_weights(model, options.load_model_path)
    examples = read_multi_label(options.test_path, run.tokenizer, options.seq_length, labels_num, with_labels=False)
    require_examples(options.test_path, examples)
    write_multi_label_predictions(options.prediction_path, model, examples, options.batch_size,
                                  collate_for(run.tokenizer), logits=run.args.output_logits,
                                  prob=run.args.output_prob)


def write_multi_label_predictions(path: str, model: MultilabelClassifier, examples: Sequence[Example],
                                  batch_size: int, collate, *, logits: bool, prob: bool) -> None:
    """The original's prediction TSV: ``label`` (ids with probability > 0.5, comma-separated) [``logits``]
    [``prob``]; written atomically."""
    header = ["label"] + ["logits"] * logits + ["prob"] * prob
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for _, batch_logits in predict(model, examples, batch_size, collate):
            for row_logits, row_prob in zip(batch_logits.tolist(), torch.sigmoid(batch_logits).tolist()):
                fields = [",".join(str(i) for i, p in enumerate(row_prob) if p > 0.5)]
                if logits:
                    fields.append(" ".join(str(v) for v in row_logits))
                if prob:
                    fields.append(" ".join(str(v) for v in row_prob))
                f.write("\t".join(fields) + "\n")

