"""Multiple-choice accuracy on data in the C-Eval / CMMLU layout (zero-shot and k-shot).

Data layouts (one CSV file per subject; columns ``question, A, B, C, D, answer``, names matched without regard
to case, an optional ``id`` or unnamed first column, extra columns such as C-Eval's ``explanation`` ignored):

* C-Eval: ``<dir>/{dev,val,test}/<subject>_{dev,val,test}.csv`` (or the same files directly in ``<dir>``);
* CMMLU: ``<dir>/{dev,test}/<subject>.csv``.

The dev split is the source of few-shot examples. A split without answers (C-Eval's test) is scored and its
predictions are written, but it has no accuracy.

Prompt (C-Eval's format; CMMLU uses its own first line)::

    以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。

    {example question}
    A. ...
    B. ...
    C. ...
    D. ...
    答案：{example answer}

    {question}
    A. ...
    ...
    答案：

Scoring reads the model's next-token distribution after the prompt, made robust to how the tokenizer writes the
answer letter. For each letter the candidates are (context, token) pairs:

* the first token where ``encode(prompt + "A")`` and ``encode(prompt + " A")`` differ from ``encode(prompt)``,
  read at the position where they differ, if that token carries the letter: this is the letter as the tokenizer
  really writes it after the answer prefix, including a merged piece such as "：A" (then the context is the
  prompt without its final "："), but not a bare "▁" that " A" may start with;
* the pieces "A" and "▁A" at the end of the prompt, when the vocabulary has them.

A letter's score is the maximum (``reduce="max"``, default) of the candidates' log-probabilities, or their
``logsumexp`` (``reduce="logsumexp"``: the total probability of writing the letter in any of these ways). When
every candidate sits at the end of the prompt, as with LLaMA's tokenizer, ``max`` ranks letters exactly as their
next-token logits do. The prediction is the best-scoring letter (the first one on a tie).
"""

from __future__ import annotations

import csv
import glob
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.evaluation.common import progress, warn_if_beyond_context, write_json, write_jsonl
from tencentpretrain.evaluation.subjects import CATEGORIES, CHINA_SPECIFIC, subject_groups, subject_info

logger = logging.getLogger(__name__)

BENCHMARKS = ("ceval", "cmmlu")
HEADERS = {
    "ceval": "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n",
    "cmmlu": "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n",
}
ANSWER_PREFIX = "答案："
REDUCTIONS = ("max", "logsumexp")
SPIECE_SPACE = "\u2581"


# ---------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``answer`` is None where the split has no labels."""

    id: str
    question: str
    options: tuple[tuple[str, str], ...]  # (letter, text) in order: ("A", ...), ("B", ...), ...
    answer: str | None

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(letter for letter, _ in self.options)


@dataclass(frozen=True)
class SubjectData:
    """The questions of one subject and its few-shot examples."""

    name: str
    questions: list[Question]
    dev: list[Question] = field(default_factory=list)


def read_questions(path: str) -> list[Question]:
    """The questions of one CSV file (C-Eval or CMMLU columns; see the module docstring)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path}: empty file")
    columns = _columns(rows[0], path)
    questions = []
    for line, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(rows[0]):
            raise DataError(f"{path}:{line}: {len(row)} columns, the header has {len(rows[0])}")
        questions.append(_question(row, columns, default_id=str(line - 2), where=f"{path}:{line}"))
    return questions


def _columns(header: list[str], path: str) -> dict[str, Any]:
    names = [h.strip() for h in header]
    lower = [n.lower() for n in names]
    if "question" not in lower:
        raise DataError(f"{path}: no 'question' column (header: {header})")
    letters = []
    while chr(ord("A") + len(letters)) in names:
        letters.append(chr(ord("A") + len(letters)))
    if len(letters) < 2:
        raise DataError(f"{path}: expected option columns A, B, ... (header: {header})")
    id_column = lower.index("id") if "id" in lower else (0 if names[0] == "" else None)
    return {
        "question": lower.index("question"),
        "options": [(letter, names.index(letter)) for letter in letters],
        "answer": lower.index("answer") if "answer" in lower else None,
        "id": id_column,
    }


def _question(row: list[str], columns: dict[str, Any], default_id: str, where: str) -> Question:
    options = tuple((letter, row[i].strip()) for letter, i in columns["options"])
    answer = row[columns["answer"]].strip().upper() if columns["answer"] is not None else ""
    if answer and answer not in dict(options):
        raise DataError(f"{where}: answer {answer!r} is not one of {', '.join(dict(options))}")
    qid = row[columns["id"]].strip() if columns["id"] is not None else default_id
    return Question(qid or default_id, row[columns["question"]].strip(), options, answer or None)


@dataclass(frozen=True)
class SubjectFiles:
    """Where a subject's evaluated split and dev split are."""

    name: str
    path: str
    dev_path: str | None


def discover_subjects(data_dir: str, split: str, benchmark: str = "auto") -> tuple[str, list[SubjectFiles]]:
    """Find the subjects of ``split`` under ``data_dir``; returns (benchmark layout, subjects sorted by name).

    ``benchmark`` is ``ceval``, ``cmmlu`` or ``auto`` (C-Eval file names ``<subject>_<split>.csv`` if present,
    else CMMLU's ``<split>/<subject>.csv``).
    """
    if benchmark not in ("auto", *BENCHMARKS):
        raise ConfigError(f"benchmark {benchmark!r}: choose from auto, {', '.join(BENCHMARKS)}")
    if not os.path.isdir(data_dir):
        raise ConfigError(f"{data_dir}: not a directory")
    candidates = {
        "ceval": [os.path.join(data_dir, split), data_dir],  # nested as in the release zip, or flat
        "cmmlu": [os.path.join(data_dir, split)],
    }
    for layout in BENCHMARKS if benchmark == "auto" else (benchmark,):
        for directory in candidates[layout]:
            subjects = _subjects_in(directory, data_dir, split, layout)
            if subjects:
                return layout, subjects
    raise ConfigError(
        f"{data_dir}: no {split!r} files found; expected C-Eval's {split}/<subject>_{split}.csv or "
        f"CMMLU's {split}/<subject>.csv (check --data_dir and --split)"
    )


def _subjects_in(directory: str, data_dir: str, split: str, layout: str) -> list[SubjectFiles]:
    suffix = f"_{split}.csv" if layout == "ceval" else ".csv"
    subjects = []
    for path in sorted(glob.glob(os.path.join(directory, f"*{suffix}"))):
        name = os.path.basename(path)[: -len(suffix)]
        if layout == "cmmlu":
            dev = os.path.join(data_dir, "dev", f"{name}.csv")
        elif directory == data_dir:  # flat C-Eval layout: the dev file sits next to the others
            dev = os.path.join(data_dir, f"{name}_dev.csv")
        else:
            dev = os.path.join(data_dir, "dev", f"{name}_dev.csv")
        subjects.append(SubjectFiles(name, path, dev if os.path.isfile(dev) else None))
    return subjects


def load_subjects(files: Sequence[SubjectFiles], *, only: Sequence[str] | None = None) -> list[SubjectData]:
    """Read the questions (and dev examples) of ``files``; ``only`` keeps the named subjects."""
    if only:
        known = {f.name for f in files}
        missing = sorted(set(only) - known)
        if missing:
            raise ConfigError(f"unknown subject(s) {', '.join(missing)}; found: {', '.join(sorted(known))}")
        files = [f for f in files if f.name in set(only)]
    return [
        SubjectData(f.name, read_questions(f.path), read_questions(f.dev_path) if f.dev_path else [])
        for f in files
    ]


def load_benchmark(
    data_dir: str, split: str, benchmark: str = "auto", *, only: Sequence[str] | None = None
) -> tuple[str, list[SubjectData]]:
    """``discover_subjects`` then ``load_subjects``: (layout, the subjects' questions and dev examples)."""
    layout, files = discover_subjects(data_dir, split, benchmark)
    subjects = load_subjects(files, only=only)
    questions = sum(len(s.questions) for s in subjects)
    logger.info("%s layout: %d subjects, %d questions in %s", layout, len(subjects), questions, split)
    return layout, subjects


# ---------------------------------------------------------------------------------------------- prompts
def format_question(question: Question, *, with_answer: bool) -> str:
    """The question, its options one per line, and the answer prefix (followed by the answer for examples)."""
    lines = [question.question, *(f"{letter}. {text}" for letter, text in question.options)]
    text = "\n".join(lines) + "\n" + ANSWER_PREFIX
    return f"{text}{question.answer}\n\n" if with_answer else text


def build_prompt(header: str, examples: Sequence[Question], question: Question) -> str:
    """``header`` (subject already filled in), the answered ``examples``, then ``question`` up to the answer
    prefix."""
    shots = "".join(format_question(q, with_answer=True) for q in examples)
    return header + shots + format_question(question, with_answer=False)


class Candidate(NamedTuple):
    """One way of writing an answer letter: ``token`` read after the first ``context`` prompt tokens."""

    context: int
    token: int


def letter_candidates(
    tokenizer, prompt_text: str, prompt_ids: list[int], letter: str, prefix: list[int]
) -> list[Candidate]:
    """The candidates of ``letter`` after ``prompt_ids`` (= ``prefix + encode(prompt_text)``); see the module
    docstring."""
    found: list[Candidate] = []
    for continuation in (letter, " " + letter):
        ids = prefix + tokenizer.encode(prompt_text + continuation)
        k = _common_prefix(ids, prompt_ids)
        # The differing token must carry the letter: " D" may start with a bare "▁" piece, which says nothing.
        if 0 < k < len(ids) and _writes_letter(tokenizer, ids[k], letter):
            found.append(Candidate(k, ids[k]))
    for piece in (letter, SPIECE_SPACE + letter):
        token = tokenizer.piece_to_id(piece)
        if token is not None and token != tokenizer.unk_id and tokenizer.id_to_piece(token) == piece:
            found.append(Candidate(len(prompt_ids), token))
    return list(dict.fromkeys(found))


def _writes_letter(tokenizer, token: int, letter: str) -> bool:
    return letter in tokenizer.id_to_piece(token) or letter in tokenizer.decode([token])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


# ---------------------------------------------------------------------------------------------- scoring
@dataclass(frozen=True, kw_only=True)
class ChoiceConfig:
    """How questions are put to the model."""

    shots: int = 0  # answered dev examples before each question
    batch_size: int = 8  # prompts per forward pass
    max_length: int | None = None  # longest prompt in tokens; None = the model's max_seq_length
    reduce: str = "max"  # how a letter's candidates combine: max | logsumexp
    header: str | None = None  # first line(s) with {subject}; None = the benchmark's
    template: str | None = None  # wrap the prompt in a chat template (tencentpretrain.tokenizers.templates)
    add_bos: bool = True  # start prompts with the tokenizer's bos token

    def __post_init__(self) -> None:
        if self.shots < 0:
            raise ConfigError(f"shots={self.shots}: must be 0 or more")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size}: must be at least 1")
        if self.reduce not in REDUCTIONS:
            raise ConfigError(f"reduce {self.reduce!r}: choose from {', '.join(REDUCTIONS)}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"max_length={self.max_length}: must be at least 2")


@dataclass
class PreparedQuestion:
    """A question ready to score: its prompt tokens and every letter's candidates."""

    subject: str
    question: Question
    prompt_ids: list[int]
    candidates: dict[str, list[Candidate]]
    shots: int  # examples that fit in the prompt
    truncated: bool  # the prompt was cut on the left to fit max_length


def prepare_question(
    tokenizer, subject: SubjectData, question: Question, config: ChoiceConfig, header: str, max_length: int
) -> PreparedQuestion:
    """Build the prompt (``header`` has the subject filled in) with as many of ``config.shots`` dev examples as
    fit in ``max_length`` tokens; a question is never its own example."""
    examples = [q for q in subject.dev if q.answer is not None and q.question != question.question]
    shots = min(config.shots, len(examples))
    prefix = [tokenizer.bos_id] if config.add_bos and tokenizer.bos_id is not None else []
    while True:
        text = build_prompt(header, examples[:shots], question)
        if config.template:
            from tencentpretrain.tokenizers.templates import get_template, render_prompt

            text = render_prompt(get_template(config.template), text)
        ids = prefix + tokenizer.encode(text)
        if len(ids) <= max_length or shots == 0:
            break
        shots -= 1
    candidates = {letter: letter_candidates(tokenizer, text, ids, letter, prefix) for letter in question.letters}
    for letter, found in candidates.items():
        if not found:
            raise DataError(f"{subject.name} question {question.id}: the tokenizer cannot write the letter {letter!r}")
    return PreparedQuestion(subject.name, question, ids, candidates, shots, len(ids) > max_length)


@torch.no_grad()
def next_token_logprobs(
    model: nn.Module, contexts: Sequence[Sequence[int]], *, batch_size: int, max_length: int, pad_id: int = 0
) -> list[torch.Tensor]:
    """Log-probabilities (V,) of the token after each context, in the order given.

    Contexts are left-truncated to ``max_length``, sorted by length and left-padded into batches; each row gets
    its own positions, so padding changes nothing (``Model.logits(..., positions=..., last_only=True)``).
    """
    device = next(model.parameters()).device
    order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]), reverse=True)
    out: list[torch.Tensor | None] = [None] * len(contexts)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for rows in progress(batches, total=len(batches), desc="scoring", unit="batch"):
        seqs = [list(contexts[i])[-max_length:] for i in rows]
        length = max(len(s) for s in seqs)
        src = torch.full((len(seqs), length), pad_id, dtype=torch.long)
        seg = torch.zeros_like(src)
        for r, s in enumerate(seqs):
            src[r, length - len(s) :] = torch.tensor(s)
            seg[r, length - len(s) :] = 1
        positions = (seg.cumsum(1) - 1).clamp(min=0)  # (B, T): 0 at each row's first real token
        logits = model.logits(src.to(device), seg.to(device), positions=positions.to(device), last_only=True)
        logprobs = logits[:, -1].float().log_softmax(-1).cpu()  # (B, V)
        for r, i in enumerate(rows):
            out[i] = logprobs[r]
    return out  # type: ignore[return-value]


def score_questions(
    model: nn.Module, prepared: Sequence[PreparedQuestion], config: ChoiceConfig, max_length: int, pad_id: int = 0
) -> list[dict[str, float]]:
    """Each question's score per letter (see the module docstring)."""
    contexts: dict[tuple[int, int], int] = {}  # (question index, context length) -> query index
    for qi, p in enumerate(prepared):
        for found in p.candidates.values():
            for c in found:
                contexts.setdefault((qi, c.context), len(contexts))
    queries = [prepared[qi].prompt_ids[:k] for qi, k in contexts]
    logprobs = next_token_logprobs(model, queries, batch_size=config.batch_size, max_length=max_length, pad_id=pad_id)
    scores = []
    for qi, p in enumerate(prepared):
        per_letter = {}
        for letter, found in p.candidates.items():
            values = torch.stack([logprobs[contexts[(qi, c.context)]][c.token] for c in found])
            per_letter[letter] = float(values.max() if config.reduce == "max" else values.logsumexp(0))
        scores.append(per_letter)
    return scores


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_choice(
    model: nn.Module, tokenizer, subjects: Sequence[SubjectData], config: ChoiceConfig, *, benchmark: str = "ceval"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every question of ``subjects``; returns (report, one record per question).

    The report has per-subject, per-category and overall accuracy (see ``summarize``); a record has the
    subject, id, answer, prediction, per-letter scores and the number of examples used.
    """
    max_length = config.max_length or _model_max_length(model)
    warn_if_beyond_context(model, max_length, "max_length")
    header = config.header if config.header is not None else HEADERS.get(benchmark, HEADERS["ceval"])
    prepared = []
    for subject in progress(subjects, total=len(subjects), desc="prompts", unit="subject"):
        if config.shots > len([q for q in subject.dev if q.answer is not None]):
            logger.warning("%s: %d dev examples, fewer than --shots %d", subject.name, len(subject.dev), config.shots)
        subject_header = header.replace("{subject}", subject_info(benchmark, subject.name).name_zh)
        for question in subject.questions:
            prepared.append(prepare_question(tokenizer, subject, question, config, subject_header, max_length))
    dropped = sum(p.shots < config.shots for p in prepared)
    if dropped:
        logger.warning("%d prompts hold fewer than %d examples to fit %d tokens", dropped, config.shots, max_length)
    truncated = sum(p.truncated for p in prepared)
    if truncated:
        logger.warning("%d prompts exceed %d tokens even without examples: cut on the left", truncated, max_length)
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    scores = score_questions(model, prepared, config, max_length, pad_id)
    records = [_record(p, s) for p, s in zip(prepared, scores, strict=True)]
    return summarize(records, benchmark=benchmark, settings=_settings(config, max_length, benchmark)), records


def _model_max_length(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if config is None or not getattr(config, "max_seq_length", None):
        raise ConfigError("the model has no max_seq_length: pass max_length")
    return config.max_seq_length


def _record(p: PreparedQuestion, scores: dict[str, float]) -> dict[str, Any]:
    prediction = max(scores, key=lambda letter: (scores[letter], -p.question.letters.index(letter)))
    return {
        "subject": p.subject,
        "id": p.question.id,
        "answer": p.question.answer,
        "prediction": prediction,
        "correct": None if p.question.answer is None else prediction == p.question.answer,
        "scores": {k: round(v, 6) for k, v in scores.items()},
        "shots": p.shots,
        "prompt_tokens": len(p.prompt_ids),
        "truncated": p.truncated,
    }


def _settings(config: ChoiceConfig, max_length: int, benchmark: str) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "shots": config.shots,
        "reduce": config.reduce,
        "max_length": max_length,
        "template": config.template,
        "add_bos": config.add_bos,
    }


def _accuracy(correct: int, total: int) -> float | None:
    return correct / total if total else None


def summarize(
    records: Sequence[dict[str, Any]], *, benchmark: str, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Per-subject, per-group and overall accuracy of question records.

    ``accuracy`` is correct / answered questions (micro average); ``macro_accuracy`` is the mean of the
    subjects' accuracies (C-Eval's leaderboard averages subjects). Questions without an answer count in
    ``questions`` but in no accuracy.
    """
    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_subject[record["subject"]].append(record)
    subjects = {}
    for name, items in sorted(by_subject.items()):
        answered = [r for r in items if r["correct"] is not None]
        correct = sum(r["correct"] for r in answered)
        subjects[name] = {
            "category": subject_info(benchmark, name).category,
            "questions": len(items),
            "answered": len(answered),
            "correct": correct,
            "accuracy": _accuracy(correct, len(answered)),
        }
    groups: dict[str, list[str]] = defaultdict(list)
    for name in subjects:
        for group in subject_groups(benchmark, name):
            groups[group].append(name)
    order = [g for g in (*CATEGORIES, CHINA_SPECIFIC) if g in groups]
    return {
        "settings": settings or {"benchmark": benchmark},
        "subjects": subjects,
        "categories": {g: _aggregate(subjects, groups[g]) for g in order},
        "overall": _aggregate(subjects, list(subjects)),
    }


def _aggregate(subjects: dict[str, dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    answered = sum(subjects[n]["answered"] for n in names)
    correct = sum(subjects[n]["correct"] for n in names)
    accuracies = [subjects[n]["accuracy"] for n in names if subjects[n]["accuracy"] is not None]
    return {
        "subjects": len(names),
        "questions": sum(subjects[n]["questions"] for n in names),
        "answered": answered,
        "correct": correct,
        "accuracy": _accuracy(correct, answered),
        "macro_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
    }


def format_table(report: dict[str, Any]) -> str:
    """A Markdown table of the report: subjects, then categories, then the overall line."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    lines = ["| subject | category | questions | correct | accuracy % |", "|---|---|---:|---:|---:|"]
    for name, s in report["subjects"].items():
        lines.append(f"| {name} | {s['category']} | {s['questions']} | {s['correct']} | {pct(s['accuracy'])} |")
    lines += ["", "| group | subjects | questions | accuracy % | macro accuracy % |", "|---|---:|---:|---:|---:|"]
    rows = [*report["categories"].items(), ("Overall", report["overall"])]
    for name, g in rows:
        lines.append(
            f"| {name} | {g['subjects']} | {g['questions']} | {pct(g['accuracy'])} | {pct(g['macro_accuracy'])} |"
        )
    return "\n".join(lines) + "\n"


def predictions_by_subject(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """``{subject: {id: letter}}``, the layout of C-Eval's test-set submission file."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for record in records:
        out[record["subject"]][record["id"]] = record["prediction"]
    return dict(out)


def write_choice_outputs(
    report: dict[str, Any],
    records: Sequence[dict[str, Any]],
    output_path: str | None = None,
    predictions_path: str | None = None,
    submission_path: str | None = None,
) -> None:
    """Write the JSON report, the per-question JSONL and the submission file, each when its path is given."""
    if output_path:
        write_json(output_path, report)
    if predictions_path:
        write_jsonl(predictions_path, records)
    if submission_path:
        write_json(submission_path, predictions_by_subject(records))
