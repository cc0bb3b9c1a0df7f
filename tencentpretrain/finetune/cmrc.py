"""Chinese machine reading comprehension (span extraction): ``finetune/run_cmrc.py`` and
``inference/run_cmrc_infer.py``.

Data: the CMRC2018 (SQuAD-style) JSON, ``{"data": [{"paragraphs": [{"context": ..., "qas": [{"id": ...,
"question": ..., "answers": [{"text": ..., "answer_start": ...}]}]}]}]}``. Text is read one character per token
(the original's CharTokenizer: a character missing from the vocabulary is ``[UNK]``), so token positions are
character positions. A context longer than the window (``--seq_length`` minus the question and 3 special tokens)
is cut into windows that start ``--doc_stride`` characters apart; each window is ``[CLS] question [SEP] window
[SEP]`` (segments 1 / 2), padded to ``--seq_length`` as in the original (the start/end softmax covers every
position, padding included, so training and prediction see the same positions the original's did).

The head ``output_layer`` maps each hidden state to a start and an end logit. Training targets are the first
answer's span within each window, clipped to the window, or ``[CLS]`` (position 0) when the window holds none of
it. A question's answer is taken from the window whose best span scores highest (start probability + end
probability); the report is the original's ``Avg: ..,F1: ..,EM: ..,Total: ..,Skip: ..`` with the CMRC2018 metrics
(character F1 over the longest common substring, exact match after removing punctuation). Predictions: a JSON
object ``{question id: answer text}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.atomic import atomic_path
from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.finetune.data import Example, SpecialIds, pad_batch, read_json
from tencentpretrain.finetune.loop import fit_on_files, log_file, predict, seed_run
from tencentpretrain.finetune.model import TaskModel, TaskOutput, build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    FinetuneOptions,
    InferOptions,
    ParsedRun,
    finetune_parser,
    infer_parser,
    parse_run,
)
from tencentpretrain.tokenizers import Tokenizer

logger = logging.getLogger("tencentpretrain.finetune")

QUESTION_OFFSET = 2  # the context starts after [CLS] question [SEP]: at len(question) + 2


# ---------------------------------------------------------------------- model
class MachineReadingComprehension(TaskModel):
    """Span extraction; head key ``output_layer`` (hidden -> start and end logits), the original's."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__(config, vocab_size)
        self.output_layer = nn.Linear(config.hidden_size, 2)

    def forward(self, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """batch: ``src``, ``seg`` (B, T); optional ``start_position``, ``end_position`` (B,).
        Logits: (B, T, 2), start logits in [..., 0], end logits in [..., 1]."""
        logits = self.output_layer(self.encode(batch["src"], batch["seg"]))  # (B, T, 2)
        if "start_position" not in batch:
            return TaskOutput(None, logits)
        start_loss = F.cross_entropy(logits[..., 0].float(), batch["start_position"])
        end_loss = F.cross_entropy(logits[..., 1].float(), batch["end_position"])
        return TaskOutput((start_loss + end_loss) / 2, logits)


# ---------------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class Question:
    """One question of a CMRC file. ``answer_start`` is the first answer's (the span trained on), ``answers``
    every reference text (what a prediction is scored against)."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_start: int | None

    @property
    def answer_end(self) -> int:
        """The first answer's last character (inclusive)."""
        return self.answer_start + len(self.answers[0]) - 1


@dataclass(frozen=True, eq=False)
class Window:
    """Where a model input comes from: ``length`` context characters of ``question`` from ``offset`` on."""

    question: Question
    offset: int
    length: int


def read_cmrc(path: str, *, check_spans: bool, need_answers: bool = True) -> list[Question]:
    """The questions of a CMRC2018 JSON file, in file order.

    ``check_spans`` (the training file): every question's first answer must sit at its ``answer_start`` in the
    context, else a DataError names the file and the question id. Evaluation files are scored on the answer
    texts only, so a misplaced ``answer_start`` there is only counted and logged (the public CMRC2018 dev set
    has a few). ``need_answers=False`` (inference) reads questions without answers.
    """
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path}: not a CMRC2018/SQuAD file: expected an object with a 'data' list of articles")
    questions: list[Question] = []
    misplaced = 0
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(_field(path, f"article {a}", article, "paragraphs", list)):
            where = f"article {a}, paragraph {p}"
            context = _field(path, where, paragraph, "context", str)
            if not context:
                raise DataError(f"{path}, {where}: the context is empty; there is nothing to answer from")
            for qa in _field(path, where, paragraph, "qas", list):
                question = _read_question(path, where, context, qa, check_spans, need_answers)
                if need_answers and not check_spans and not _span_matches(context, question):
                    misplaced += 1
                questions.append(question)
    if misplaced:
        logger.warning("%s: %d question(s) whose first answer is not at its answer_start; they are scored on the "
                       "answer texts, which is all evaluation uses", path, misplaced)
    return questions


def _field(path: str, where: str, obj: Any, key: str, kind: type) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        raise DataError(f"{path}, {where}: no {key!r} {kind.__name__} (a CMRC2018 file has data -> paragraphs -> "
                        "context and qas -> id, question, answers)")
    return value


def _read_question(path: str, where: str, context: str, qa: Any, check_spans: bool,
                   need_answers: bool) -> Question:
    question_id = qa.get("id") if isinstance(qa, dict) else None
    if not isinstance(question_id, (str, int)):
        raise DataError(f"{path}, {where}: a question without an 'id'")
    where = f"question {question_id}"
    text = _field(path, where, qa, "question", str)
    raw_answers = qa.get("answers", []) if need_answers else []
    if need_answers and (not isinstance(raw_answers, list) or not raw_answers):
        raise DataError(f"{path}, {where}: no answers; training and evaluation files need at least one "
                        "{'text': ..., 'answer_start': ...} (predict unanswered questions with run_cmrc_infer.py)")
    answers, start = [], None
    for i, answer in enumerate(raw_answers):
        answers.append(_field(path, f"{where}, answer {i}", answer, "text", str))
        if i == 0:
            start = answer.get("answer_start")
    question = Question(str(question_id), text, context, tuple(answers), start if isinstance(start, int) else None)
    if check_spans:
        _check_span(path, question)
    return question


def _span_matches(context: str, question: Question) -> bool:
    start, text = question.answer_start, question.answers[0]
    return start is not None and start >= 0 and bool(text) and context[start:start + len(text)] == text


def _check_span(path: str, question: Question) -> None:
    if _span_matches(question.context, question):
        return
    start, text = question.answer_start, question.answers[0]
    where = f"{path}, question {question.id}"
    if not text:
        raise DataError(f"{where}: the first answer's text is empty")
    if start is None or start < 0:
        raise DataError(f"{where}: the first answer {text!r} has no valid answer_start ({start!r})")
    found = question.context.find(text)
    hint = (f"; the text occurs at {found}, fix the answer_start" if found >= 0
            else "; the text does not occur in the context")
    raise DataError(f"{where}: answer_start {start} does not point at the answer {text!r}: the context there reads "
                    f"{question.context[start:start + len(text)]!r}{hint}")


def char_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """One id per character (the original's CharTokenizer; unknown characters -> [UNK]), so that token
    positions are character positions. Unlike the original, surrounding whitespace is kept: stripping it
    shifted every position of a window that started with a space."""
    return [tokenizer.piece_to_id(char) for char in text]


def context_windows(context_length: int, question_length: int, seq_length: int, doc_stride: int
                    ) -> list[tuple[int, int]]:
    """(offset, length) of each window over the context, the original's: windows of up to ``seq_length -
    question_length - 3`` characters, each starting ``min(length, doc_stride)`` after the previous one, the last
    one ending at the context's end."""
    max_length = seq_length - question_length - 3
    windows: list[tuple[int, int]] = []
    offset = 0
    while offset < context_length:
        length = min(context_length - offset, max_length)
        windows.append((offset, length))
        if offset + length == context_length:
            break
        offset += min(length, doc_stride)
    return windows


def window_span(question: Question, offset: int, length: int) -> tuple[int, int]:
    """Training target (start, end) token positions of the first answer in a window: the answer's part inside
    the window (the original used windows holding part of an answer as extra examples), or (0, 0) = [CLS]."""
    first = len(question.question) + QUESTION_OFFSET  # position of the window's first character
    last = first + length - 1
    start = max(question.answer_start - offset + first, first)
    end = min(question.answer_end - offset + first, last)
    if start > last or end < first:
        return 0, 0
    return start, end


def build_windows(questions: Sequence[Question], tokenizer: Tokenizer, seq_length: int, doc_stride: int, *,
                  with_targets: bool, path: str) -> list[Example]:
    """The model inputs of ``questions``: one example per window, in question order, padded to ``seq_length``.
    Each example holds ``src``, ``seg``, ``window`` (a Window) and, ``with_targets``, ``start_position`` and
    ``end_position``."""
    specials = SpecialIds.of(tokenizer)
    examples: list[Example] = []
    for question in questions:
        if seq_length - len(question.question) - 3 < 1:
            raise DataError(f"{path}, question {question.id}: the question has {len(question.question)} "
                            f"characters, which leaves no room for the context in --seq_length {seq_length}; "
                            "raise --seq_length")
        question_ids = [specials.cls, *char_ids(tokenizer, question.question), specials.sep]
        for offset, length in context_windows(len(question.context), len(question.question), seq_length,
                                              doc_stride):
            context_ids = [*char_ids(tokenizer, question.context[offset:offset + length]), specials.sep]
            src = question_ids + context_ids
            seg = [1] * len(question_ids) + [2] * len(context_ids)
            padding = seq_length - len(src)
            example: Example = {"src": src + [specials.pad] * padding, "seg": seg + [0] * padding,
                                "window": Window(question, offset, length)}
            if with_targets:
                example["start_position"], example["end_position"] = window_span(question, offset, length)
            examples.append(example)
    return examples


def collate_for(tokenizer: Tokenizer):
    pad_id = SpecialIds.of(tokenizer).pad
    return lambda examples: pad_batch(examples, {"src": pad_id})


# ---------------------------------------------------------------------- prediction
@dataclass(frozen=True)
class SpanGuess:
    """The best span of one window: absolute context positions (inclusive) and its score."""

    start: int
    end: int
    score: float


def best_span(window: Window, logits: torch.Tensor, max_answer_length: int | None) -> SpanGuess:
    """The original's choice in one window (``logits`` (T, 2)): the start with the highest probability at or
    after the context's first token, then the end with the highest probability at or after the start (within
    ``max_answer_length`` characters when given); score = the two probabilities' sum."""
    probs = torch.softmax(logits.float(), dim=0)  # (T, 2), over every position as the original
    start_probs, end_probs = probs[:, 0], probs[:, 1]
    first = len(window.question.question) + QUESTION_OFFSET
    start = first + int(torch.argmax(start_probs[first:]))
    stop = start + max_answer_length if max_answer_length else len(end_probs)
    end = start + int(torch.argmax(end_probs[start:stop]))
    shift = window.offset - first
    return SpanGuess(start + shift, end + shift, float(start_probs[start] + end_probs[end]))


def choose_answers(windows: Sequence[Window], logits: Sequence[torch.Tensor],
                   max_answer_length: int | None = None) -> list[tuple[Question, str]]:
    """(question, answer) for every question of ``windows`` (each with its logits (T, 2)), in order of first
    appearance: the span of the question's window that scores highest (the first such window on ties)."""
    best: dict[int, tuple[Question, SpanGuess]] = {}
    for window, window_logits in zip(windows, logits, strict=True):
        guess = best_span(window, window_logits, max_answer_length)
        key = id(window.question)
        if key not in best or guess.score > best[key][1].score:
            best[key] = (window.question, guess)
    # a context slice, as the original: a span past the context's end is cut short (or empty)
    return [(q, q.context[g.start:g.end + 1]) for q, g in best.values()]


def predict_answers(model: MachineReadingComprehension, examples: Sequence[Example], batch_size: int, collate,
                    max_answer_length: int | None = None) -> list[tuple[Question, str]]:
    """(question, predicted answer) for every question of ``examples`` (windows from ``build_windows``)."""
    logits = [row for _, batch_logits in predict(model, examples, batch_size, collate) for row in batch_logits]
    return choose_answers([e["window"] for e in examples], logits, max_answer_length)


# ---------------------------------------------------------------------- CMRC2018 metrics
# The punctuation the CMRC2018 evaluation ignores ("……" is listed there too but never matches one character).
PUNCTUATION = frozenset("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』")
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def segment_characters(text: str, remove_punctuation: bool = False) -> list[str]:
    """The CMRC2018 evaluation's segmentation of lower-cased, stripped ``text`` as the original ran it: one
    segment per character (the official script tokenised non-Chinese runs into words; the original, and we, split
    them into characters). The original forgot to lower-case here; the official script does, and so do we."""
    return [c for c in text.lower().strip() if not (remove_punctuation and c in PUNCTUATION)]


def longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run shared by ``a`` and ``b``."""
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def f1_score(answers: Sequence[str], prediction: str) -> float:
    """The best character F1 of ``prediction`` over ``answers`` (CMRC2018: precision and recall of the longest
    common substring, punctuation removed)."""
    scores = [0.0]
    predicted = segment_characters(prediction, remove_punctuation=True)
    for answer in answers:
        gold = segment_characters(answer, remove_punctuation=True)
        common = longest_common_substring(gold, predicted)
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            scores.append(2 * precision * recall / (precision + recall))
    return max(scores)


def exact_match(answers: Sequence[str], prediction: str) -> float:
    """1.0 when ``prediction`` equals one of ``answers`` after lower-casing, stripping and removing
    punctuation (CMRC2018), else 0.0."""
    predicted = "".join(segment_characters(prediction, remove_punctuation=True))
    return float(any("".join(segment_characters(a, remove_punctuation=True)) == predicted for a in answers))


@dataclass(frozen=True)
class CmrcScores:
    f1: float  # percent
    em: float  # percent
    total: int
    skipped: int

    @property
    def average(self) -> float:
        return (self.f1 + self.em) / 2


def score_predictions(predictions: Sequence[tuple[Question, str]]) -> CmrcScores:
    """F1 and EM (percent of all questions); an empty prediction is skipped (scores 0). The original also
    skipped one-character predictions (an off-by-one); they are scored here."""
    f1 = em = 0.0
    skipped = 0
    for question, answer in predictions:
        if not answer:
            skipped += 1
            continue
        f1 += f1_score(question.answers, answer)
        em += exact_match(question.answers, answer)
    total = len(predictions)
    return CmrcScores(100.0 * f1 / total, 100.0 * em / total, total, skipped)


def evaluate_cmrc(model: MachineReadingComprehension, examples: Sequence[Example], batch_size: int, collate,
                  max_answer_length: int | None = None) -> float:
    """Score the windows ``examples`` of a labelled file; logs the original's report line, returns Avg."""
    scores = score_predictions(predict_answers(model, examples, batch_size, collate, max_answer_length))
    logger.info("Avg: %.4f,F1:%.4f,EM:%.4f,Total:%d,Skip:%d", scores.average, scores.f1, scores.em, scores.total,
                scores.skipped)
    return scores.average


# ---------------------------------------------------------------------- scripts
def add_cmrc_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reading comprehension")
    group.add_argument("--doc_stride", type=int, default=128,
                       help="characters between the starts of consecutive windows over a long context")
    group.add_argument("--max_answer_length", type=int, default=None,
                       help="longest answer predicted, in characters (default: no limit, as the original)")
    # the original always read CMRC one character per token
    parser.set_defaults(tokenizer="char")


def _check_flags(args: argparse.Namespace) -> None:
    if args.doc_stride < 1:
        raise ConfigError(f"--doc_stride must be >= 1, got {args.doc_stride}")
    if args.max_answer_length is not None and args.max_answer_length < 1:
        raise ConfigError(f"--max_answer_length must be >= 1, got {args.max_answer_length}")


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_cmrc.py``."""
    run = parse_run(finetune_parser(__doc__, add_cmrc_flags, adversarial=False), argv)  # as the original: no adv
    _check_flags(run.args)
    finetune_cmrc(run)


def finetune_cmrc(run: ParsedRun) -> None:
    options: FinetuneOptions = run.options(FinetuneOptions)
    args = run.args
    with log_file(options.log_path):
        seed_run(options)
        model = build_task_model(MachineReadingComprehension, run.model_config, run.tokenizer.vocab_size,
                                 options.pretrained_model_path)

        def read(path: str, train: bool = False) -> list[Example]:
            questions = read_cmrc(path, check_spans=train)
            logger.info("The number of questions in %s: %d", path, len(questions))
            return build_windows(questions, run.tokenizer, options.seq_length, args.doc_stride, with_targets=train,
                                 path=path)

        collate = collate_for(run.tokenizer)
        fit_on_files(model, run.args, read, train=read(options.train_path, train=True), collate=collate,
                     evaluate=lambda m, ex: evaluate_cmrc(m, ex, options.batch_size, collate,
                                                          args.max_answer_length))


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_cmrc_infer.py``."""
    run = parse_run(infer_parser(__doc__, add_cmrc_flags), argv)
    _check_flags(run.args)
    options: InferOptions = run.options(InferOptions)
    model = MachineReadingComprehension(run.model_config, run.tokenizer.vocab_size)
    load_finetuned_weights(model, options.load_model_path)
    questions = read_cmrc(options.test_path, check_spans=False, need_answers=False)
    _check_unique_ids(options.test_path, questions)
    examples = build_windows(questions, run.tokenizer, options.seq_length, run.args.doc_stride,
                             with_targets=False, path=options.test_path)
    if not examples:
        raise DataError(f"{options.test_path}: no questions to answer")
    logger.info("The number of prediction instances: %d", len(examples))
    predictions = predict_answers(model, examples, options.batch_size, collate_for(run.tokenizer),
                                  run.args.max_answer_length)
    write_answers(options.prediction_path, predictions)


def _check_unique_ids(path: str, questions: Sequence[Question]) -> None:
    seen: set[str] = set()
    for question in questions:
        if question.id in seen:
            raise DataError(f"{path}: the question id {question.id!r} occurs twice; the predictions are keyed by id")
        seen.add(question.id)


def write_answers(path: str, predictions: Sequence[tuple[Question, str]]) -> None:
    """The original's prediction file: ``{question id: answer}`` as indented JSON; written atomically."""
    output = {question.id: answer for question, answer in predictions}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(output, indent=4, ensure_ascii=False) + "\n")
