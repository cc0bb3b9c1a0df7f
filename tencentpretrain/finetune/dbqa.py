"""Document-based question answering: ``finetune/run_dbqa.py``.

Data: a TSV with the header ``qid<TAB>label<TAB>text_a<TAB>text_b``: one line per (question ``text_a``, candidate
sentence ``text_b``) pair, ``label`` 1 when the candidate answers the question. The lines of one question are
consecutive (as in NLPCC-DBQA): a question is a run of lines with the same ``qid``. The model is the
classifier's (``output_layer_1``/``output_layer_2``, usually 2 labels), trained on the pairs; the candidates of
a question are ranked by their label-1 logit. Report: the original's ``Mean Reciprocal Rank:`` line (the epoch
with the best MRR is kept), then ``Mean Average Precision:``. Predictions: the original has no DBQA inference
script; ``inference/run_classifier_infer.py --output_logits`` predicts with a DBQA model (rank by the second
logit). ``--soft_targets``/``--soft_alpha`` are accepted, as by the original, and not used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tencentpretrain.errors import DataError
from tencentpretrain.finetune.classifier import (
    Classifier,
    add_classifier_flags,
    collate_for,
    count_labels,
    read_classification,
)
from tencentpretrain.finetune.data import Example, TsvRow
from tencentpretrain.finetune.loop import fit_on_files, log_file, predict, seed_run
from tencentpretrain.finetune.model import build_task_model
from tencentpretrain.finetune.options import (
    FinetuneOptions,
    finetune_parser,
    parse_run,
)
from tencentpretrain.tokenizers import Tokenizer

logger = logging.getLogger("tencentpretrain.finetune")

Question = tuple[list[float], list[int]]  # (scores of the candidates, their 0/1 labels)


# ---------------------------------------------------------------------- metrics
def group_by_question(qids: Sequence[int], scores: Sequence[float], labels: Sequence[int]) -> list[Question]:
    """The candidates of each question: runs of consecutive lines with the same qid (as the original grouped)."""
    questions: list[Question] = []
    previous = None
    for qid, score, label in zip(qids, scores, labels):
        if not questions or qid != previous:
            questions.append(([], []))
        questions[-1][0].append(score)
        questions[-1][1].append(label)
        previous = qid
    return questions


def reciprocal_rank(scores: Sequence[float], labels: Sequence[int]) -> float:
    """1 / rank of the best-ranked answer (rank = 1 + candidates scored strictly higher). A question without
    any answer counts 1 / (candidates + 1), as in the original's MRR."""
    answers = [s for s, label in zip(scores, labels) if label == 1]
    if not answers:
        return 1 / (len(scores) + 1)
    best = max(answers)
    return 1 / (1 + sum(s > best for s in scores))


def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Mean over the answers of (answers ranked at or above it) / its rank, candidates sorted by score (ties
    keep the file's order); 0 for a question without any answer."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    found, precisions = 0, []
    for rank, i in enumerate(order, start=1):
        if labels[i] == 1:
            found += 1
            precisions.append(found / rank)
    return sum(precisions) / len(precisions) if precisions else 0.0


def mrr_and_map(questions: Sequence[Question]) -> tuple[float, float]:
    """(mean reciprocal rank, mean average precision) over ``questions``."""
    if not questions:
        return 0.0, 0.0
    mrr = sum(reciprocal_rank(s, labels) for s, labels in questions) / len(questions)
    return mrr, sum(average_precision(s, labels) for s, labels in questions) / len(questions)


# ---------------------------------------------------------------------- data and evaluation
def parse_qid(row: TsvRow) -> int:
    text = row.get("qid")
    try:
        return int(text)
    except ValueError:
        raise row.error(f"the qid {text!r} is not an integer question id") from None


def read_dbqa(path: str, tokenizer: Tokenizer, seq_length: int, labels_num: int | None) -> list[Example]:
    """Classification examples of (question, candidate) pairs, each with its ``qid``."""
    return read_classification(path, tokenizer, seq_length, labels_num=labels_num, required=("qid", "text_b"),
                               extra=lambda row: {"qid": parse_qid(row)})


def evaluate_dbqa(model: Classifier, examples: Sequence[Example], batch_size: int, collate) -> float:
    """Rank each question's candidates by their label-1 logit; log MRR (the score kept) and MAP."""
    scores: list[float] = []
    for _, logits in predict(model, examples, batch_size, collate):
        scores += logits[:, 1].tolist()
    questions = group_by_question([e["qid"] for e in examples], scores, [e["label"] for e in examples])
    mrr, mean_ap = mrr_and_map(questions)
    logger.info("Mean Reciprocal Rank: %.4f", mrr)
    logger.info("Mean Average Precision: %.4f", mean_ap)
    return mrr


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_dbqa.py``."""
    run = parse_run(finetune_parser(__doc__, add_classifier_flags), argv,
                    lambda args: {"labels_num": args.labels_num or count_labels(args.train_path)})
    options: FinetuneOptions = run.options(FinetuneOptions)
    args, labels_num = run.args, run.model_config.labels_num
    if labels_num < 2:
        raise DataError(f"{options.train_path}: DBQA ranks candidates by the logit of label 1, but the training "
                        f"set has {labels_num} label(s); label answers 1 and other candidates 0")
    with log_file(options.log_path):
        seed_run(options)
        model = build_task_model(Classifier, run.model_config, run.tokenizer.vocab_size,
                                 options.pretrained_model_path, labels_num=labels_num, soft_alpha=args.soft_alpha)

        def read(path: str) -> list[Example]:
            return read_dbqa(path, run.tokenizer, options.seq_length, labels_num)

        collate = collate_for(run.tokenizer)
        fit_on_files(model, run.args, read, collate=collate,
                     evaluate=lambda m, ex: evaluate_dbqa(m, ex, options.batch_size, collate))
