"""Classification with k-fold cross validation: ``finetune/run_classifier_cv.py`` and
``inference/run_classifier_cv_infer.py`` (features for stacking).

The training TSV (the classifier's format) is cut, in file order, into ``--folds_num`` consecutive folds (sizes
differ by at most one). For each fold a classifier is fine-tuned on the other folds for ``--epochs_num`` epochs
and saved after the last one as ``<output_model_path stem>-fold_<i><suffix>`` (``models/classifier_model-fold_0.bin``);
it then predicts its held-out fold, which is reported. The out-of-fold class probabilities of every training
example, in file order, are saved with ``numpy.save`` to ``--train_features_path`` (``.npy`` appended when absent),
shape (examples, labels_num); the last lines are the mean ``Acc. : `` and ``Marco F1 : `` over the folds (the
original's spelling).

Inference loads the ``--folds_num`` fold models of ``--load_model_path`` and saves the mean of their class
probabilities on ``--test_path`` to ``--test_features_path``, shape (examples, labels_num).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from tencentpretrain.atomic import atomic_path
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.finetune.classifier import (
    Classifier,
    add_classifier_flags,
    collate_for,
    count_labels,
    read_classification,
)
from tencentpretrain.finetune.classifier_mt import make_optional
from tencentpretrain.finetune.data import Example, require_examples
from tencentpretrain.finetune.loop import fit, log_file, predict, seed_run
from tencentpretrain.finetune.metrics import confusion_matrix, log_classification_report, precision_recall_f1
from tencentpretrain.finetune.model import build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    AdversarialOptions,
    FinetuneOptimConfig,
    FinetuneOptions,
    finetune_parser,
    infer_parser,
    parse_run,
    required_labels_num,
)

logger = logging.getLogger("tencentpretrain.finetune")

DEFAULT_OUTPUT = "models/classifier_model.bin"


def fold_model_path(path: str, fold: int) -> str:
    """``models/classifier_model.bin`` -> ``models/classifier_model-fold_<fold>.bin`` (the original's names)."""
    root, suffix = os.path.splitext(path)
    return f"{root}-fold_{fold}{suffix}"


def fold_bounds(instances: int, folds: int) -> list[tuple[int, int]]:
    """[start, end) of each of ``folds`` consecutive folds of ``instances`` examples; sizes differ by at most 1."""
    if folds < 2:
        raise ConfigError(f"--folds_num must be at least 2, got {folds}")
    if instances < folds:
        raise DataError(f"{instances} training examples cannot be split into --folds_num {folds} folds")
    size, extra = divmod(instances, folds)
    bounds, start = [], 0
    for fold in range(folds):
        end = start + size + (fold < extra)
        bounds.append((start, end))
        start = end
    return bounds


def npy_path(path: str) -> str:
    """The file ``numpy.save(path)`` writes: ``.npy`` is appended when absent."""
    return path if path.endswith(".npy") else path + ".npy"


def save_features(path: str, features: np.ndarray) -> str:
    """``features`` saved with numpy.save, atomically; returns the file written."""
    path = npy_path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, features)
    return path


# ---------------------------------------------------------------------- fine-tuning
def add_cv_flags(parser: argparse.ArgumentParser) -> None:
    add_classifier_flags(parser)
    group = parser.add_argument_group("cross validation")
    group.add_argument("--folds_num", type=int, default=5, help="the number of folds")
    group.add_argument("--train_features_path", required=True,
                       help="where the out-of-fold probabilities of the training examples are saved (.npy)")
    parser.set_defaults(output_model_path=DEFAULT_OUTPUT)


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_classifier_cv.py``."""
    parser = finetune_parser(__doc__, add_cv_flags)
    make_optional(parser, "dev_path")
    run = parse_run(parser, argv, lambda args: {"labels_num": args.labels_num or count_labels(args.train_path)})
    args, labels_num = run.args, run.model_config.labels_num
    options: FinetuneOptions = run.options(FinetuneOptions)
    if options.dev_path or options.test_path:
        raise ConfigError("run_classifier_cv.py evaluates each held-out fold; --dev_path and --test_path are not used")
    with log_file(options.log_path):
        seed_run(options)
        dataset = read_classification(options.train_path, run.tokenizer, options.seq_length, labels_num=labels_num,
                                      soft_targets=args.soft_targets)
        collate = collate_for(run.tokenizer)
        features: list[torch.Tensor] = []
        accuracies, macro_f1s = [], []
        for fold, (start, end) in enumerate(fold_bounds(len(dataset), args.folds_num)):
            model = build_task_model(Classifier, run.model_config, run.tokenizer.vocab_size,
                                     options.pretrained_model_path, labels_num=labels_num,
                                     soft_alpha=args.soft_alpha)
            fold_options = dataclasses.replace(options, output_model_path=fold_model_path(options.output_model_path,
                                                                                          fold))
            fit(model, dataset[:start] + dataset[end:], None, None, collate=collate, evaluate=None,
                options=fold_options, optim=run.options(FinetuneOptimConfig), adv=run.options(AdversarialOptions),
                keep="last", log_prefix=f"Fold id: {fold}, ")
            probs, accuracy, macro_f1 = evaluate_fold(model, dataset[start:end], fold, options.batch_size, collate)
            features.append(probs)
            accuracies.append(accuracy)
            macro_f1s.append(macro_f1)
        written = save_features(args.train_features_path, torch.cat(features).double().numpy())
        logger.info("Out-of-fold probabilities of %d examples saved to %s", len(dataset), written)
        logger.info("Acc. : %.4f", sum(accuracies) / len(accuracies))
        logger.info("Marco F1 : %.4f", sum(macro_f1s) / len(macro_f1s))


def evaluate_fold(model: Classifier, held_out: Sequence[Example], fold: int, batch_size: int,
                  collate) -> tuple[torch.Tensor, float, float]:
    """(probabilities (n, labels_num), accuracy, macro F1) of ``model`` on its held-out fold, with the report."""
    confusion = torch.zeros(model.labels_num, model.labels_num, dtype=torch.long)
    probs = []
    for chunk, logits in predict(model, held_out, batch_size, collate):
        probs.append(torch.softmax(logits, dim=-1))
        confusion += confusion_matrix(logits.argmax(-1), torch.tensor([e["label"] for e in chunk]), model.labels_num)
    logger.info("Fold id: %d evaluation.", fold)
    accuracy = log_classification_report(logger, confusion)
    f1 = [v[2] for v in precision_recall_f1(confusion)]
    return torch.cat(probs), accuracy, sum(f1) / len(f1)


# ---------------------------------------------------------------------- inference
def add_cv_infer_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cross validation")
    group.add_argument("--folds_num", type=int, default=5, help="the number of fold models to average")
    group.add_argument("--test_features_path", required=True,
                       help="where the mean probabilities of the fold models are saved (.npy)")


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_classifier_cv_infer.py``."""
    parser = infer_parser(__doc__, add_cv_infer_flags)
    make_optional(parser, "prediction_path")
    run = parse_run(parser, argv)
    args, labels_num = run.args, required_labels_num(run.model_config.labels_num)
    if args.folds_num < 1:
        raise ConfigError(f"--folds_num must be at least 1, got {args.folds_num}")
    examples = read_classification(args.test_path, run.tokenizer, args.seq_length, labels_num=labels_num,
                                   with_labels=False)
    require_examples(args.test_path, examples)
    collate = collate_for(run.tokenizer)
    total = torch.zeros(len(examples), labels_num, dtype=torch.float64)
    model = Classifier(run.model_config, run.tokenizer.vocab_size, labels_num=labels_num)
    for fold in range(args.folds_num):
        load_finetuned_weights(model, fold_model_path(args.load_model_path, fold))
        probs = [torch.softmax(logits, dim=-1) for _, logits in predict(model, examples, args.batch_size, collate)]
        total += torch.cat(probs).double()
    written = save_features(args.test_features_path, (total / args.folds_num).numpy())
    logger.info("Mean probabilities of %d fold models saved to %s", args.folds_num, written)
