"""Classification with a grid search: ``finetune/run_classifier_grid.py``.

Every combination of ``--batch_size_list``, ``--learning_rate_list`` and ``--epochs_num_list`` (in that nesting
order) fine-tunes a fresh classifier (same seed, same initial weights) on ``--train_path`` for its number of
epochs and scores the model after the last epoch on ``--dev_path``. Each combination's line reads
``On configuration: {'learning_rate': ..., 'batch_size': ..., 'epochs_num': ...}, Acc.: 0.xxxx``; the last lines
are a table of every combination and the original's ``Best Acc. is: 0.xxxx, on configuration {...}.``. The
model of the best combination (the first one on ties) is saved to ``--output_model_path``, and ``--test_path``,
when given, is scored with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.errors import ConfigError
from tencentpretrain.finetune.classifier import (
    Classifier,
    add_classifier_flags,
    collate_for,
    count_labels,
    evaluate_classifier,
    read_classification,
)
from tencentpretrain.finetune.loop import fit, log_file, seed_run
from tencentpretrain.finetune.model import build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    AdversarialOptions,
    FinetuneOptimConfig,
    FinetuneOptions,
    ParsedRun,
    finetune_parser,
    parse_run,
)

logger = logging.getLogger("tencentpretrain.finetune")


@dataclass(frozen=True)
class GridPoint:
    batch_size: int
    learning_rate: float
    epochs_num: int

    def describe(self) -> dict[str, float | int]:
        """The original's configuration dict (its key order)."""
        return {"learning_rate": self.learning_rate, "batch_size": self.batch_size, "epochs_num": self.epochs_num}


@dataclass(frozen=True)
class GridResult:
    point: GridPoint
    dev_accuracy: float


def add_grid_flags(parser: argparse.ArgumentParser) -> None:
    add_classifier_flags(parser)
    group = parser.add_argument_group("grid search")
    group.add_argument("--batch_size_list", nargs="+", type=int, default=[32, 64], help="batch sizes to try")
    group.add_argument("--learning_rate_list", nargs="+", type=float, default=[3e-5, 1e-4, 3e-4],
                       help="learning rates to try")
    group.add_argument("--epochs_num_list", nargs="+", type=int, default=[3, 5, 8], help="numbers of epochs to try")


def grid_points(args: argparse.Namespace) -> list[GridPoint]:
    for name in ("batch_size_list", "learning_rate_list", "epochs_num_list"):
        values = getattr(args, name)
        if not values or min(values) <= 0:
            raise ConfigError(f"--{name} needs one or more positive values, got {values}")
    return [GridPoint(b, lr, e) for b, lr, e in
            itertools.product(args.batch_size_list, args.learning_rate_list, args.epochs_num_list)]


def finetune_main(argv: Sequence[str] | None = None) -> list[GridResult]:
    """``finetune/run_classifier_grid.py``; returns every combination's dev accuracy, in grid order."""
    run = parse_run(finetune_parser(__doc__, add_grid_flags), argv,
                    lambda args: {"labels_num": args.labels_num or count_labels(args.train_path)})
    return grid_search(run)


def grid_search(run: ParsedRun) -> list[GridResult]:
    options: FinetuneOptions = run.options(FinetuneOptions)
    optim: FinetuneOptimConfig = run.options(FinetuneOptimConfig)
    args, labels_num = run.args, run.model_config.labels_num
    points = grid_points(args)
    with log_file(options.log_path):
        def read(path: str, soft: bool = False):
            return read_classification(path, run.tokenizer, options.seq_length, labels_num=labels_num,
                                       soft_targets=soft)

        train, dev = read(options.train_path, args.soft_targets), read(options.dev_path)
        collate = collate_for(run.tokenizer)
        results: list[GridResult] = []
        best: GridResult | None = None
        for point in points:
            seed_run(options)  # every combination starts from the same weights and order
            model = build_task_model(Classifier, run.model_config, run.tokenizer.vocab_size,
                                     options.pretrained_model_path, labels_num=labels_num,
                                     soft_alpha=args.soft_alpha)
            fit(model, train, None, None, collate=collate, evaluate=None,
                options=dataclasses.replace(options, batch_size=point.batch_size, epochs_num=point.epochs_num),
                optim=dataclasses.replace(optim, learning_rate=point.learning_rate),
                adv=run.options(AdversarialOptions), keep="none")
            result = GridResult(point, evaluate_classifier(model, dev, options.batch_size, collate))
            results.append(result)
            logger.info("On configuration: %s, Acc.: %.4f", point.describe(), result.dev_accuracy)
            if best is None or result.dev_accuracy > best.dev_accuracy:
                best = result
                save_checkpoint(model, options.output_model_path)
        log_grid_report(results, best)
        if options.test_path:
            logger.info("Test set evaluation (best configuration).")
            load_finetuned_weights(model, options.output_model_path)
            evaluate_classifier(model, read(options.test_path), options.batch_size, collate)
    return results


def log_grid_report(results: Sequence[GridResult], best: GridResult) -> None:
    logger.info("Grid search: %d configurations", len(results))
    logger.info("batch_size  learning_rate  epochs_num  dev Acc.")
    for r in results:
        logger.info("%10d  %13g  %10d  %.4f%s", r.point.batch_size, r.point.learning_rate, r.point.epochs_num,
                    r.dev_accuracy, "  (best)" if r is best else "")
    logger.info("Best Acc. is: %.4f, on configuration %s.", best.dev_accuracy, best.point.describe())
