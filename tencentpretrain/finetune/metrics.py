"""The original's evaluation reports: confusion matrix, per-label precision/recall/F1 and accuracy; Pearson/Spearman
correlations."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

EPS = 1e-9


def confusion_matrix(pred: torch.Tensor, gold: torch.Tensor, labels_num: int) -> torch.Tensor:
    """(labels_num, labels_num) counts; row = predicted label, column = gold label (the original's layout)."""
    flat = pred.long() * labels_num + gold.long()
    return torch.bincount(flat, minlength=labels_num * labels_num).view(labels_num, labels_num)


def precision_recall_f1(confusion: torch.Tensor) -> list[tuple[float, float, float]]:
    """(precision, recall, f1) of each label, with the original's epsilon (an absent label scores 0)."""
    scores = []
    for i in range(confusion.shape[0]):
        correct = confusion[i, i].item()
        p = correct / (confusion[i, :].sum().item() + EPS)
        r = correct / (confusion[:, i].sum().item() + EPS)
        scores.append((p, r, 2 * p * r / (p + r + EPS)))
    return scores


def log_classification_report(logger: logging.Logger, confusion: torch.Tensor) -> float:
    """Log the original's report (matrix, ``Label i: p, r, f1`` lines, ``Acc. (Correct/Total)``); returns the
    accuracy."""
    correct, total = int(confusion.trace().item()), int(confusion.sum().item())
    logger.info("Confusion matrix:")
    logger.info("%s", confusion)
    logger.info("Report precision, recall, and f1:")
    for i, (p, r, f1) in enumerate(precision_recall_f1(confusion)):
        logger.info("Label %d: %.3f, %.3f, %.3f", i, p, r, f1)
    accuracy = correct / total if total else 0.0
    logger.info("Acc. (Correct/Total): %.4f (%d/%d) ", accuracy, correct, total)
    return accuracy


# ---------------------------------------------------------------------- correlations (regression, SimCSE)
def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation of two equally long sequences; NaN when either is constant (as scipy)."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"correlation needs two sequences of the same length >= 2, got {len(x)} and {len(y)}")
    a, b = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = (a.square().sum() * b.square().sum()).sqrt()
    return float("nan") if denominator == 0 else float((a * b).sum() / denominator)


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, tied values sharing the mean of their ranks (what Spearman's correlation ranks by)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's of the average ranks); NaN when either is constant."""
    return pearson(average_ranks(x), average_ranks(y))
