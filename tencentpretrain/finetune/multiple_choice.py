"""Multiple choice: C3 (``finetune/run_c3.py``, ``inference/run_c3_infer.py``) and ChID (``finetune/run_chid.py``,
``inference/run_chid_infer.py``). Both score each candidate with one shared head, the original's
``MultipleChoice``: the [CLS] state of ``[CLS] candidate [SEP] ...`` (after dropout) goes through ``output_layer``
(hidden -> 1) and the candidates' scores are compared with a softmax.

C3: a JSON list of documents ``[[sentence, ...], [{"question", "choice": [...], "answer", "id"}, ...], doc id]``.
A question becomes ``--max_choices_num`` inputs ``[CLS] choice [SEP] question [SEP] document [SEP]`` (segment 1
up to the question's [SEP], then 2), lower-cased; missing choices are "No Answer". Predictions: one JSON line
``{"id": question id, "label": choice index}`` per question.

ChID: a JSON-lines file ``{"candidates": [idiom, ...], "content": [text with blanks #idiom000000#, ...]}`` and an
answer file ``{"#idiom000000#": candidate index}``. Each blank becomes ``[CLS] idiom [SEP] left context [SEP] right
context [SEP]`` for each candidate (one character per token, the blank's neighbouring blanks as [MASK]), with
segment id 0 on every token as the original built it - so the encoder attends to every position, padding
included, and inputs are padded to ``--seq_length``. Predictions: ``{blank: candidate index}``, the candidates of
one line given to its blanks one to one, highest score first (the original's assignment).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.atomic import atomic_path
from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.finetune.cmrc import char_ids
from tencentpretrain.finetune.data import Example, SpecialIds, read_json
from tencentpretrain.finetune.loop import fit, log_file, predict, seed_run
from tencentpretrain.finetune.metrics import confusion_matrix, log_classification_report
from tencentpretrain.finetune.model import TaskModel, TaskOutput, build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    AdversarialOptions,
    FinetuneOptimConfig,
    FinetuneOptions,
    InferOptions,
    ParsedRun,
    finetune_parser,
    infer_parser,
    parse_run,
)
from tencentpretrain.layers.dropout import Dropout
from tencentpretrain.tokenizers import Tokenizer

logger = logging.getLogger("tencentpretrain.finetune")

Reader = Callable[[], list[Example]]  # reads a task file when called


# ---------------------------------------------------------------------- model
class MultipleChoice(TaskModel):
    """Scores ``choices_num`` inputs per example; head key ``output_layer`` (hidden -> 1), the original's.

    ``segmented=False`` (ChID) encodes as the original did inputs whose segment ids are all 0: segment
    embedding 0 everywhere and attention over every position, padding included.
    """

    def __init__(self, config: ModelConfig, vocab_size: int, *, segmented: bool = True) -> None:
        super().__init__(config, vocab_size)
        self.segmented = segmented
        self.dropout = Dropout(config.dropout)
        self.output_layer = nn.Linear(config.hidden_size, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """batch: ``src``, ``seg`` (B, C, T); optional ``label`` (B,). Logits: (B, C)."""
        src, seg = batch["src"], batch["seg"]
        batch_size, choices_num, length = src.shape
        src, seg = src.reshape(-1, length), seg.reshape(-1, length)  # (B*C, T)
        if self.segmented:
            hidden = self.encode(src, seg)
        else:
            positions = self.embedding.default_positions(src)
            hidden = self.encoder(self.embedding(src, seg, positions), torch.ones_like(seg), positions=positions,
                                  honor_padding=True)
        logits = self.output_layer(self.dropout(hidden[:, 0])).view(batch_size, choices_num)  # (B, C)
        if "label" not in batch:
            return TaskOutput(None, logits)
        return TaskOutput(F.cross_entropy(logits.float(), batch["label"]), logits)


def collate_choices(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack examples whose ``src``/``seg`` are lists of ``C`` id lists into (B, C, T) tensors, T the longest
    input of the batch; ``label`` (when present) into (B,)."""
    length = max(len(ids) for e in examples for ids in e["src"])

    def padded(key: str, pad: int) -> torch.Tensor:
        return torch.tensor([[ids + [pad] * (length - len(ids)) for ids in e[key]] for e in examples])

    batch = {"src": padded("src", pad_id), "seg": padded("seg", 0)}
    if "label" in examples[0]:
        batch["label"] = torch.tensor([e["label"] for e in examples])
    return batch


def evaluate_choices(model: MultipleChoice, examples: Sequence[Example], batch_size: int, collate) -> float:
    """Accuracy of ``model`` on labelled ``examples``, with the original's classification report (one label per
    choice position)."""
    choices_num = len(examples[0]["src"]) if examples else 1
    confusion = torch.zeros(choices_num, choices_num, dtype=torch.long)
    for chunk, logits in predict(model, examples, batch_size, collate):
        gold = torch.tensor([e["label"] for e in chunk])
        confusion += confusion_matrix(logits.argmax(-1), gold, choices_num)
    return log_classification_report(logger, confusion)


def _check_max_choices(args: argparse.Namespace) -> None:
    if args.max_choices_num < 1:
        raise ConfigError(f"--max_choices_num must be >= 1, got {args.max_choices_num}")


# ---------------------------------------------------------------------- C3
NO_ANSWER = "No Answer"  # the original's filler for questions with fewer choices


def read_c3(path: str, tokenizer: Tokenizer, seq_length: int, max_choices_num: int, *,
            with_labels: bool = True) -> list[Example]:
    """Examples of a C3 file, one per question in file order: ``src``/``seg`` (``max_choices_num`` inputs),
    ``label`` (the index of the answer among the choices, when read with labels) and ``id`` (the question's
    ``id``, None when absent)."""
    specials = SpecialIds.of(tokenizer)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: not a C3 file: expected a list of [sentences, questions, id] documents")
    examples = []
    for d, document in enumerate(data):
        where = f"{path}, document {d}"
        if not (isinstance(document, list) and len(document) >= 2 and isinstance(document[0], list)
                and isinstance(document[1], list)):
            raise DataError(f"{where}: expected [[sentence, ...], [question, ...], id]")
        text = "\n".join(str(s) for s in document[0]).lower()
        for q, item in enumerate(document[1]):
            examples.append(_c3_example(f"{where}, question {q}", item, text, tokenizer, specials, seq_length,
                                        max_choices_num, with_labels))
    return examples


def _c3_example(where: str, item: Any, text: str, tokenizer: Tokenizer, specials: SpecialIds, seq_length: int,
                max_choices_num: int, with_labels: bool) -> Example:
    if not isinstance(item, dict) or not isinstance(item.get("question"), str) \
            or not isinstance(item.get("choice"), list):
        raise DataError(f"{where}: expected an object with 'question' and a 'choice' list")
    choices = [str(c).lower() for c in item["choice"]]
    if len(choices) > max_choices_num:
        raise DataError(f"{where}: {len(choices)} choices, more than --max_choices_num {max_choices_num}")
    padded = choices + [NO_ANSWER] * (max_choices_num - len(choices))
    question_ids = [*tokenizer.encode(item["question"].lower()), specials.sep]
    text_ids = [*tokenizer.encode(text), specials.sep]
    example: Example = {"src": [], "seg": [], "id": item.get("id")}
    for choice in padded:
        choice_ids = [specials.cls, *tokenizer.encode(choice), specials.sep]
        src = choice_ids + question_ids + text_ids
        seg = [1] * (len(choice_ids) + len(question_ids)) + [2] * len(text_ids)
        example["src"].append(src[:seq_length])
        example["seg"].append(seg[:seq_length])
    if with_labels:
        answer = item.get("answer")
        if not isinstance(answer, str):
            raise DataError(f"{where}: no 'answer' (training and evaluation files need one; predict unanswered "
                            "questions with run_c3_infer.py)")
        matches = [k for k, choice in enumerate(choices) if choice == answer.lower()]
        if not matches:
            raise DataError(f"{where}: the answer {answer!r} is not one of the choices {item['choice']}")
        example["label"] = matches[-1]  # the original kept the last equal choice
    return example


def add_c3_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multiple choice")
    group.add_argument("--max_choices_num", type=int, default=4,
                       help="choices per question; questions with fewer are padded with 'No Answer'")


def c3_finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_c3.py``."""
    run = parse_run(finetune_parser(__doc__, add_c3_flags), argv)
    _check_max_choices(run.args)
    options: FinetuneOptions = run.options(FinetuneOptions)

    def read(path: str) -> Callable[[], list[Example]]:
        return lambda: read_c3(path, run.tokenizer, options.seq_length, run.args.max_choices_num)

    _finetune_choices(run, read(options.train_path), read(options.dev_path),
                      read(options.test_path) if options.test_path else None)


def c3_infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_c3_infer.py``."""
    run = parse_run(infer_parser(__doc__, add_c3_flags), argv)
    _check_max_choices(run.args)
    options: InferOptions = run.options(InferOptions)
    examples = read_c3(options.test_path, run.tokenizer, options.seq_length, run.args.max_choices_num,
                       with_labels=False)
    if not examples:
        raise DataError(f"{options.test_path}: no questions to predict")
    missing = next((i for i, e in enumerate(examples) if e["id"] is None), None)
    if missing is not None:
        raise DataError(f"{options.test_path}: question {missing} (in file order) has no 'id'; the prediction "
                        "file names every question by its id")
    model = MultipleChoice(run.model_config, run.tokenizer.vocab_size)
    load_finetuned_weights(model, options.load_model_path)
    logger.info("The number of prediction instances: %d", len(examples))
    pad_id = SpecialIds.of(run.tokenizer).pad
    with atomic_path(options.prediction_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for chunk, logits in predict(model, examples, options.batch_size, lambda ex: collate_choices(ex, pad_id)):
            labels = logits.argmax(-1).tolist()
            f.writelines(json.dumps({"id": e["id"], "label": label}) + "\n" for e, label in zip(chunk, labels))


# ---------------------------------------------------------------------- ChID
BLANK = re.compile(r"#idiom\d{6}#")


@dataclass(frozen=True)
class Blank:
    """A blank of a ChID line: its tag (``#idiom000123#``) and the line it is on (blanks of one line share the
    candidates)."""

    tag: str
    line: int


def read_chid(path: str, answer_path: str | None, tokenizer: Tokenizer, seq_length: int,
              max_choices_num: int) -> list[Example]:
    """Examples of a ChID file, one per blank in file order: ``src``/``seg`` (``max_choices_num`` inputs of
    ``seq_length`` tokens), ``blank`` (a Blank) and, with ``answer_path``, ``label``."""
    answers = _read_chid_answers(answer_path) if answer_path else None
    specials = SpecialIds.of(tokenizer)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        candidates, contents = _read_chid_line(where, line, max_choices_num)
        for content in contents:
            for tag, left, right in blank_contexts(content, tokenizer, specials, seq_length - 4, where):
                example = _chid_example(candidates, left, right, tokenizer, specials, seq_length, max_choices_num)
                example["blank"] = Blank(tag, number)
                if answers is not None:
                    example["label"] = _chid_label(answers, answer_path, tag, where, len(candidates))
                examples.append(example)
    return examples


def _read_chid_answers(path: str) -> dict[str, Any]:
    answers = read_json(path)
    if not isinstance(answers, dict):
        raise DataError(f"{path}: not a ChID answer file: expected an object {{\"#idiom000000#\": index, ...}}")
    return answers


def _read_chid_line(where: str, line: str, max_choices_num: int) -> tuple[list[str], list[str]]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e}); a ChID file has one JSON object per line") from None
    candidates = record.get("candidates") if isinstance(record, dict) else None
    contents = record.get("content") if isinstance(record, dict) else None
    if not isinstance(candidates, list) or not isinstance(contents, list):
        raise DataError(f"{where}: expected an object with a 'candidates' list and a 'content' list")
    if len(candidates) > max_choices_num:
        raise DataError(f"{where}: {len(candidates)} candidates, more than --max_choices_num {max_choices_num}")
    return [str(c) for c in candidates], [str(c) for c in contents]


def _chid_label(answers: dict[str, Any], answer_path: str, tag: str, where: str, candidates_num: int) -> int:
    label = answers.get(tag)
    if label is None:
        raise DataError(f"{answer_path}: no answer for the blank {tag} ({where})")
    if not isinstance(label, int) or not 0 <= label < candidates_num:
        raise DataError(f"{answer_path}: the answer {label!r} of {tag} is not a candidate index 0.."
                        f"{candidates_num - 1} ({where})")
    return label


def blank_contexts(content: str, tokenizer: Tokenizer, specials: SpecialIds, tokens_num: int, where: str
                   ) -> list[tuple[str, list[int], list[int]]]:
    """(tag, left ids, right ids) for each blank of ``content``: up to ``tokens_num`` tokens around the blank,
    half on each side where the text allows, other blanks as [MASK]."""
    pieces: list[int | str] = []  # token ids, and the tags of the blanks
    position = 0
    for match in BLANK.finditer(content):
        pieces += char_ids(tokenizer, content[position:match.start()].strip())  # the original stripped each run
        pieces.append(match.group())
        position = match.end()
    pieces += char_ids(tokenizer, content[position:].strip())
    tags = [p for p in pieces if isinstance(p, str)]
    if len(tags) > 1 and specials.mask is None:
        raise DataError(f"{where}: the vocabulary has no [MASK], which stands for the other blanks of a text")
    contexts = []
    for tag in tags:
        index = pieces.index(tag)
        left, right = tokens_around(pieces, index, tokens_num)
        contexts.append((tag, _mask_tags(left, specials), _mask_tags(right, specials)))
    return contexts


def _mask_tags(pieces: Sequence[int | str], specials: SpecialIds) -> list[int]:
    return [specials.mask if isinstance(p, str) else p for p in pieces]


def tokens_around(tokens: Sequence, index: int, tokens_num: int) -> tuple[list, list]:
    """The original's window around ``tokens[index]``: ``tokens_num // 2`` tokens on the left and the rest on
    the right, shifted toward the side that has more when one side runs out. (The original could drop left
    context when both sides ran short; the window here is never cut below the text's start.)"""
    left_num = tokens_num // 2
    right_num = tokens_num - left_num
    after = len(tokens) - 1 - index
    if index >= left_num and after >= right_num:
        return list(tokens[index - left_num:index]), list(tokens[index + 1:index + 1 + right_num])
    if index < left_num:
        left = list(tokens[:index])
        return left, list(tokens[index + 1:index + 1 + tokens_num - len(left)])
    right = list(tokens[index + 1:])
    return list(tokens[max(0, index - (tokens_num - len(right))):index]), right


def _chid_example(candidates: Sequence[str], left: list[int], right: list[int], tokenizer: Tokenizer,
                  specials: SpecialIds, seq_length: int, max_choices_num: int) -> Example:
    # segment 0 and id 0 on padding, as the original (which assumed [PAD] = 0); see MultipleChoice(segmented=False)
    example: Example = {"src": [], "seg": []}
    for candidate in candidates:
        src = [specials.cls, *char_ids(tokenizer, candidate.strip()), specials.sep, *left, specials.sep, *right,
               specials.sep][:seq_length]
        example["src"].append(src + [0] * (seq_length - len(src)))
        example["seg"].append([0] * seq_length)
    for _ in range(max_choices_num - len(candidates)):
        example["src"].append([0] * seq_length)
        example["seg"].append([0] * seq_length)
    return example


def assign_candidates(blanks: Sequence[str], logits: torch.Tensor) -> dict[str, int]:
    """The original's assignment of one line's candidates to its blanks (``logits`` (blanks, choices)): the
    highest-scoring (blank, candidate) pair first, each blank and each candidate used once, ties in candidate
    then blank order."""
    pairs = [(choice, blank, logits[blank, choice].item())
             for choice in range(logits.shape[1]) for blank in range(logits.shape[0])]
    pairs.sort(key=lambda pair: pair[2], reverse=True)  # stable: ties keep their order
    free_choices, free_blanks = set(range(logits.shape[1])), set(range(logits.shape[0]))
    chosen: dict[int, int] = {}
    for choice, blank, _ in pairs:
        if blank in free_blanks and choice in free_choices:
            chosen[blank] = choice
            free_blanks.discard(blank)
            free_choices.discard(choice)
    return {blanks[blank]: chosen[blank] for blank in sorted(chosen)}


def add_chid_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ChID")
    group.add_argument("--train_answer_path", required=True, help="answers of --train_path (JSON: blank -> index)")
    group.add_argument("--dev_answer_path", required=True, help="answers of --dev_path")
    group.add_argument("--test_answer_path", default=None,
                       help="answers of --test_path (the test set is evaluated only with them)")
    add_chid_infer_flags(parser)


def add_chid_infer_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multiple choice")
    group.add_argument("--max_choices_num", type=int, default=10,
                       help="candidates per line; lines with fewer are padded")
    # the original always read ChID one character per token
    parser.set_defaults(tokenizer="char")


def _unsegmented_collate(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    return collate_choices(examples, 0)  # already padded to --seq_length with 0


def chid_finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_chid.py``."""
    run = parse_run(finetune_parser(__doc__, add_chid_flags), argv)
    _check_max_choices(run.args)
    options: FinetuneOptions = run.options(FinetuneOptions)
    args = run.args
    if options.test_path and not args.test_answer_path:
        raise ConfigError("--test_path needs --test_answer_path (the test set's answers) to be evaluated; predict "
                          "it with inference/run_chid_infer.py instead")

    def read(path: str, answer_path: str) -> Callable[[], list[Example]]:
        return lambda: read_chid(path, answer_path, run.tokenizer, options.seq_length, args.max_choices_num)

    _finetune_choices(run, read(options.train_path, args.train_answer_path),
                      read(options.dev_path, args.dev_answer_path),
                      read(options.test_path, args.test_answer_path) if options.test_path else None,
                      segmented=False)


def chid_infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_chid_infer.py``."""
    run = parse_run(infer_parser(__doc__, add_chid_infer_flags), argv)
    _check_max_choices(run.args)
    options: InferOptions = run.options(InferOptions)
    examples = read_chid(options.test_path, None, run.tokenizer, options.seq_length, run.args.max_choices_num)
    if not examples:
        raise DataError(f"{options.test_path}: no blanks (#idiom000000#) to fill")
    tags = [e["blank"].tag for e in examples]
    seen: set[str] = set()
    for tag in tags:
        if tag in seen:
            raise DataError(f"{options.test_path}: the blank {tag} occurs twice; predictions are keyed by blank")
        seen.add(tag)
    model = MultipleChoice(run.model_config, run.tokenizer.vocab_size, segmented=False)
    load_finetuned_weights(model, options.load_model_path)
    logger.info("The number of prediction instances: %d", len(examples))
    logits = torch.cat([b for _, b in predict(model, examples, options.batch_size, _unsegmented_collate)])
    predictions: dict[str, int] = {}
    lines = [e["blank"].line for e in examples]
    start = 0
    while start < len(examples):  # the blanks of one line are consecutive
        stop = start
        while stop < len(examples) and lines[stop] == lines[start]:
            stop += 1
        predictions.update(assign_candidates(tags[start:stop], logits[start:stop]))
        start = stop
    with atomic_path(options.prediction_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(predictions, f, indent=2)


# ---------------------------------------------------------------------- shared fine-tuning
def _finetune_choices(run: ParsedRun, train: Reader, dev: Reader, test: Reader | None, *,
                      segmented: bool = True) -> None:
    """Fine-tune a MultipleChoice model on ``train()``, keeping the best on ``dev()`` (the original's loop)."""
    options: FinetuneOptions = run.options(FinetuneOptions)
    with log_file(options.log_path):
        seed_run(options)
        model = build_task_model(MultipleChoice, run.model_config, run.tokenizer.vocab_size,
                                 options.pretrained_model_path, segmented=segmented)
        pad_id = SpecialIds.of(run.tokenizer).pad if segmented else 0

        def collate(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
            return collate_choices(examples, pad_id)

        fit(model, train(), dev, test, collate=collate,
            evaluate=lambda m, ex: evaluate_choices(m, ex, options.batch_size, collate), options=options,
            optim=run.options(FinetuneOptimConfig), adv=run.options(AdversarialOptions))
