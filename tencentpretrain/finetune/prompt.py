"""Prompt-based (cloze) classification: ``finetune/run_classifier_prompt.py`` and
``inference/run_classifier_prompt_infer.py``.

A template of ``--prompt_path`` (JSON: ``{prompt_id: {"template": ..., "answer_words": {label: word}}}``, default
``models/prompts.json``) wraps each example: ``[TEXT_A]``/``[TEXT_B]`` stand for the texts, ``[ANS]`` for a
``[MASK]`` whose predicted word is the label; e.g. ``"[TEXT_A],我[ANS]满意"`` with ``{"0": "不", "1": "很"}``.
The input is ``[CLS] template [SEP]`` (segment 1; with two texts ``[TEXT_A]`` is followed by ``[SEP]``). The
pretrained MLM head (``target.linear_1``, ``target.layer_norm``, ``target.linear_2``: the original's keys, with
``linear_2`` tied to the word embedding under ``tie_weights``) scores the vocabulary at the mask; as in the
original, the logits of non-answer words are zeroed (not removed) before the cross-entropy, and the prediction is
the best answer word. Answer words must each be one token of the vocabulary.

Data: the classification TSV (``label<TAB>text_a[<TAB>text_b]``), labels being the keys of ``answer_words``.
Report: the original's ``Acc. (Correct/Total)`` line (with the confusion matrix and per-label lines).
``--epochs_num 0`` is the original's zero-shot run: the test set is scored with the pretrained MLM head.
Predictions: ``label`` [``logits``] [``prob``] over the answer words; the label is the answer's index among the
answer words in vocabulary-id order (the original's output; for the shipped prompts it is the label itself).
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tencentpretrain.checkpoint import StateDict
from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.finetune.classifier import add_classifier_infer_flags, write_class_predictions
from tencentpretrain.finetune.data import Example, SpecialIds, TsvRow, pad_batch, read_json, read_tsv, require_examples
from tencentpretrain.finetune.loop import default_device, fit_on_files, log_file, predict, seed_run
from tencentpretrain.finetune.metrics import confusion_matrix, log_classification_report
from tencentpretrain.finetune.model import TaskModel, TaskOutput, build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    FinetuneOptions,
    InferOptions,
    ParsedRun,
    finetune_parser,
    infer_parser,
    parse_run,
)
from tencentpretrain.targets.mlm import MlmTarget
from tencentpretrain.tokenizers import Tokenizer

logger = logging.getLogger("tencentpretrain.finetune")

TEXT_A, TEXT_B, ANSWER = "[TEXT_A]", "[TEXT_B]", "[ANS]"


# ---------------------------------------------------------------------- the prompt
@dataclass(frozen=True)
class Prompt:
    """A template cut into pieces (``[TEXT_A]``, ``[TEXT_B]``, ``[ANS]`` or the token ids of literal text) and
    the answer token of each label."""

    pieces: tuple[str | tuple[int, ...], ...]
    template_length: int  # literal tokens + 1 for the mask, as the original counted
    answer_ids: dict[str, int]  # label -> token id

    @property
    def answer_order(self) -> list[int]:
        """The answer token ids in vocabulary order: the columns of the logits and the predicted index."""
        return sorted(set(self.answer_ids.values()))

    def label_index(self, label: str) -> int:
        return self.answer_order.index(self.answer_ids[label])


def load_prompt(path: str, prompt_id: str, tokenizer: Tokenizer) -> Prompt:
    """The template ``prompt_id`` of the JSON at ``path``, tokenised; errors name the file and the prompt."""
    table = read_json(path)
    if not isinstance(table, dict) or prompt_id not in table:
        known = ", ".join(sorted(table)) if isinstance(table, dict) else "none"
        raise ConfigError(f"{path}: no prompt {prompt_id!r} (--prompt_id); the file has: {known}")
    entry = table[prompt_id]
    if not isinstance(entry, dict) or not isinstance(entry.get("template"), str) \
            or not isinstance(entry.get("answer_words"), dict) or not entry["answer_words"]:
        raise ConfigError(f"{path}: prompt {prompt_id!r} needs a 'template' string and an 'answer_words' object "
                          "mapping each label to its word")
    template = entry["template"]
    if template.count(ANSWER) != 1:
        raise ConfigError(f"{path}: the template of {prompt_id!r} must hold {ANSWER} exactly once: {template!r}")
    pieces: list[str | tuple[int, ...]] = []
    length = 0
    for term in re.split(r"(\[TEXT_A\]|\[TEXT_B\]|\[ANS\])", template):
        if term in (TEXT_A, TEXT_B, ANSWER):
            pieces.append(term)
            length += term == ANSWER
        elif term:
            ids = tuple(tokenizer.encode(term))
            pieces.append(ids)
            length += len(ids)
    answers = {}
    for label, word in entry["answer_words"].items():
        token_id = tokenizer.piece_to_id(word)
        if token_id is None or tokenizer.id_to_piece(token_id) != word:
            raise ConfigError(f"{path}: the answer word {word!r} of label {label!r} (prompt {prompt_id!r}) is not "
                              "one token of the vocabulary; a cloze answer is a single token")
        answers[str(label)] = token_id
    if len(set(answers.values())) != len(answers):
        raise ConfigError(f"{path}: prompt {prompt_id!r} gives two labels the same answer word")
    return Prompt(tuple(pieces), length, answers)


def encode_cloze(tokenizer: Tokenizer, specials: SpecialIds, prompt: Prompt, text_a: str, text_b: str | None,
                 seq_length: int) -> tuple[list[int], int]:
    """(``[CLS] template [SEP]`` cut to ``seq_length``, the mask's position), the texts shortened as the
    original: text_a alone to seq_length - template - 2, or text_b to what text_a leaves."""
    ids_a = tokenizer.encode(text_a)
    ids_b = tokenizer.encode(text_b) if text_b is not None else []
    if text_b is None:
        ids_a = ids_a[:max(seq_length - prompt.template_length - 2, 0)]
    else:
        ids_b = ids_b[:max(seq_length - prompt.template_length - len(ids_a) - 3, 0)]
    src, mask_position = [specials.cls], -1
    for piece in prompt.pieces:
        if piece == TEXT_A:
            src += ids_a + ([specials.sep] if text_b is not None else [])
        elif piece == TEXT_B:
            src += ids_b if text_b is not None else []
        elif piece == ANSWER:
            mask_position = len(src)
            src.append(specials.mask)
        else:
            src += list(piece)
    src.append(specials.sep)
    return src[:seq_length], mask_position


def read_prompt_examples(path: str, tokenizer: Tokenizer, seq_length: int, prompt: Prompt, *,
                         with_labels: bool = True) -> list[Example]:
    """``src``, ``seg`` (all 1), ``mask_position`` and ``label`` (the answer's column). A training/dev line whose
    mask falls beyond ``seq_length`` is skipped and counted, as in the original; at inference it is an error."""
    specials = SpecialIds.of(tokenizer)
    if specials.mask is None:
        raise DataError("the tokenizer's vocabulary has no [MASK]; prompt classification predicts the word at a "
                        "[MASK]")
    examples, ignored = [], 0
    for row in read_tsv(path, ("label", "text_a") if with_labels else ("text_a",)):
        src, mask_position = encode_cloze(tokenizer, specials, prompt, row.get("text_a"), row.fields.get("text_b"),
                                          seq_length)
        if mask_position >= seq_length:
            if not with_labels:
                raise row.error(f"the template's [ANS] falls beyond --seq_length {seq_length}; raise --seq_length")
            ignored += 1
            continue
        example: Example = {"src": src, "seg": [1] * len(src), "mask_position": mask_position}
        if with_labels:
            example["label"] = _answer_column(row, prompt)
        examples.append(example)
    logger.info("read dataset, count:%d, ignore_count:%d", len(examples), ignored)
    return examples


def _answer_column(row: TsvRow, prompt: Prompt) -> int:
    label = row.get("label")
    if label not in prompt.answer_ids:
        raise row.error(f"the label {label!r} has no answer word in the prompt (labels: "
                        f"{', '.join(prompt.answer_ids)})")
    return prompt.label_index(label)


# ---------------------------------------------------------------------- model
class ClozeTest(TaskModel):
    """The encoder and the MLM head (keys ``target.linear_1``/``layer_norm``/``linear_2``, the original's)."""

    def __init__(self, config: ModelConfig, vocab_size: int, *, answer_ids: Sequence[int]) -> None:
        super().__init__(config, vocab_size)
        self.target = MlmTarget(config, vocab_size)
        if config.tie_weights:
            self.target.linear_2.weight = self.embedding.word.embedding.weight
        self.register_buffer("answer_ids", torch.tensor(sorted(answer_ids), dtype=torch.long), persistent=False)
        self.labels_num = len(answer_ids)

    def adapt_pretrained_state(self, state: StateDict) -> StateDict:
        """A pretrained BERT keeps its MLM head at ``target.mlm.*``: use it (the original looked for
        ``target.*`` only, so its head started untrained)."""
        if any(k.startswith("target.mlm.") for k in state) and not any(k.startswith("target.linear_") for k in state):
            return {("target." + k[len("target.mlm."):] if k.startswith("target.mlm.") else k): v
                    for k, v in state.items()}
        return state

    def forward(self, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """batch: ``src``, ``seg`` (B, T), ``mask_position`` (B,); optional ``label`` (B,) answer columns.
        Returns the logits of the answer words (B, answers)."""
        hidden = self.encode(batch["src"], batch["seg"])
        at_mask = hidden[torch.arange(hidden.shape[0], device=hidden.device), batch["mask_position"]]  # (B, H)
        vocab_logits = self.target.logits(at_mask).float()  # (B, V)
        keep = torch.zeros(vocab_logits.shape[-1], device=vocab_logits.device)
        keep[self.answer_ids] = 1.0
        vocab_logits = vocab_logits * keep  # the original zeroes the other words' logits
        logits = vocab_logits[:, self.answer_ids]  # (B, answers)
        if "label" not in batch:
            return TaskOutput(None, logits)
        return TaskOutput(F.cross_entropy(vocab_logits, self.answer_ids[batch["label"]]), logits)


def evaluate_prompt(model: ClozeTest, examples: Sequence[Example], batch_size: int, collate) -> float:
    confusion = torch.zeros(model.labels_num, model.labels_num, dtype=torch.long)
    for chunk, logits in predict(model, examples, batch_size, collate):
        gold = torch.tensor([e["label"] for e in chunk])
        confusion += confusion_matrix(logits.argmax(-1), gold, model.labels_num)
    return log_classification_report(logger, confusion)


def collate_for(tokenizer: Tokenizer):
    pad_id = SpecialIds.of(tokenizer).pad
    return lambda examples: pad_batch(examples, {"src": pad_id})


# ---------------------------------------------------------------------- scripts
def add_prompt_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("prompt")
    group.add_argument("--prompt_id", default="chnsenticorp_char", help="the template to use (a key of --prompt_path)")
    group.add_argument("--prompt_path", default="models/prompts.json", help="JSON table of templates and answers")


def add_prompt_infer_flags(parser: argparse.ArgumentParser) -> None:
    add_classifier_infer_flags(parser)
    add_prompt_flags(parser)


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_classifier_prompt.py``."""
    run = parse_run(finetune_parser(__doc__, add_prompt_flags, adversarial=False), argv)
    prompt = load_prompt(run.args.prompt_path, run.args.prompt_id, run.tokenizer)
    if run.args.epochs_num == 0:
        zero_shot(run, prompt)
        return
    options: FinetuneOptions = run.options(FinetuneOptions)
    with log_file(options.log_path):
        seed_run(options)
        model = build_task_model(ClozeTest, run.model_config, run.tokenizer.vocab_size,
                                 options.pretrained_model_path, answer_ids=prompt.answer_order)

        def read(path: str) -> list[Example]:
            return read_prompt_examples(path, run.tokenizer, options.seq_length, prompt)

        collate = collate_for(run.tokenizer)
        fit_on_files(model, run.args, read, collate=collate,
                     evaluate=lambda m, ex: evaluate_prompt(m, ex, options.batch_size, collate))


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_classifier_prompt_infer.py``."""
    run = parse_run(infer_parser(__doc__, add_prompt_infer_flags), argv)
    options: InferOptions = run.options(InferOptions)
    prompt = load_prompt(run.args.prompt_path, run.args.prompt_id, run.tokenizer)
    model = ClozeTest(run.model_config, run.tokenizer.vocab_size, answer_ids=prompt.answer_order)
    load_finetuned_weights(model, options.load_model_path)
    examples = read_prompt_examples(options.test_path, run.tokenizer, options.seq_length, prompt, with_labels=False)
    require_examples(options.test_path, examples)
    write_class_predictions(options.prediction_path, model, examples, options.batch_size, collate_for(run.tokenizer),
                            logits=run.args.output_logits, prob=run.args.output_prob)


def zero_shot(run: ParsedRun, prompt: Prompt) -> None:
    """``--epochs_num 0``: score the test set with the pretrained model's own MLM head, as the original did
    (nothing is trained or saved)."""
    args = run.args
    if not args.pretrained_model_path or not args.test_path:
        raise ConfigError("--epochs_num 0 (zero-shot) scores --test_path with --pretrained_model_path; give both")
    with log_file(args.log_path):
        model = build_task_model(ClozeTest, run.model_config, run.tokenizer.vocab_size, args.pretrained_model_path,
                                 answer_ids=prompt.answer_order)
        model.to(default_device())
        logger.info("Test set evaluation.")
        examples = read_prompt_examples(args.test_path, run.tokenizer, args.seq_length, prompt)
        evaluate_prompt(model, examples, args.batch_size, collate_for(run.tokenizer))
