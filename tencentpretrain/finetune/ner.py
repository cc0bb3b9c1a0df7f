"""Sequence labelling (named entities): ``finetune/run_ner.py`` and ``inference/run_ner_infer.py``.

Data: a TSV with the header ``text_a<TAB>label``; ``text_a`` holds the tokens (characters, for Chinese) separated
by single spaces, ``label`` one tag per token, also space-separated (BIO or BIOES tags such as ``B-PER I-PER O``).
``--label2id_path`` is a JSON object mapping each tag to its id (0..n-1); a tag ``[PAD]`` is added after them
(id n, the label of padding), so the model has n + 1 outputs, as in the original. Tokens are looked up in the
vocabulary as they are (unknown ones become [UNK]); no [CLS] or [SEP] is added, so position i is token i. Inputs
longer than --seq_length are cut, with their tags.

Model: the encoder's states go through ``output_layer`` to one score per tag; the loss is the cross-entropy over
the real tokens, or with ``--crf_target`` the mean negative log-likelihood of a CRF (``crf.*``) over the tags'
log-softmax, decoded with Viterbi.

Evaluation (the original's): an entity starts at a tag whose name starts with ``B`` and runs until the next ``O``,
the next ``B...`` tag or the end of the sentence (so ``I-``/``E-``/``S-`` tags all continue it, and an ``S-`` tag
alone is no entity). Precision = correct / predicted entities, recall = correct / gold entities, where a
predicted entity is correct when a gold entity has the same span and the same tags throughout it. Predictions: a
file with the header ``pred_label`` and one line of tags per input, each followed by a space.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.atomic import atomic_path
from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import DataError
from tencentpretrain.finetune.crf import CRF
from tencentpretrain.finetune.data import Example, TsvRow, batches, pad_batch, read_json, read_tsv, require_examples
from tencentpretrain.finetune.loop import default_device, fit_on_files, log_file, seed_run, to_device
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

PAD_LABEL = "[PAD]"
OUTSIDE_LABEL = "O"
PREDICTION_HEADER = "pred_label"


# ---------------------------------------------------------------------- labels
@dataclass(frozen=True)
class NerLabels:
    """The tags of a label2id file plus ``[PAD]`` (the last id), and the ids the evaluation needs."""

    label_to_id: dict[str, int]  # the file's tags, then [PAD]
    path: str  # the label2id file, for messages

    @classmethod
    def load(cls, path: str) -> NerLabels:
        """Read and check ``--label2id_path``: tags mapped to the ids 0..n-1, with an ``O`` tag."""
        mapping = read_json(path)
        if not isinstance(mapping, dict) or not mapping:
            raise DataError(f"{path}: expected a JSON object mapping each tag to its id, e.g. "
                            '{"O": 0, "B-PER": 1, "I-PER": 2}')
        if any(not isinstance(v, int) or isinstance(v, bool) for v in mapping.values()):
            raise DataError(f"{path}: every id must be an integer, got {mapping}")
        if sorted(mapping.values()) != list(range(len(mapping))):
            raise DataError(f"{path}: the ids must be 0..{len(mapping) - 1}, each once; got {sorted(mapping.values())}")
        if PAD_LABEL in mapping:
            raise DataError(f"{path}: {PAD_LABEL!r} is reserved (it is added as the label of padding); remove it")
        if OUTSIDE_LABEL not in mapping:
            raise DataError(f"{path}: there is no {OUTSIDE_LABEL!r} tag; the evaluation ends entities at it")
        return cls({**mapping, PAD_LABEL: len(mapping)}, path)

    def __len__(self) -> int:
        return len(self.label_to_id)

    @property
    def pad_id(self) -> int:
        return self.label_to_id[PAD_LABEL]

    @property
    def outside_id(self) -> int:
        return self.label_to_id[OUTSIDE_LABEL]

    @property
    def begin_ids(self) -> frozenset[int]:
        """Ids of the tags that start an entity: those whose name starts with ``B`` (the original's rule)."""
        return frozenset(i for label, i in self.label_to_id.items() if label.startswith("B"))

    @property
    def id_to_label(self) -> list[str]:
        names = [""] * len(self)
        for label, i in self.label_to_id.items():
            names[i] = label
        return names

    def file_labels(self) -> dict[str, int]:
        """The mapping as the label2id file gave it (without [PAD])."""
        return {k: v for k, v in self.label_to_id.items() if k != PAD_LABEL}


# ---------------------------------------------------------------------- model
class NerTagger(TaskModel):
    """A tag per token; head key ``output_layer``, and ``crf.*`` with ``crf_target`` (the original's keys)."""

    head_reads_padding = False  # pooling and tagging read real positions only

    def __init__(self, config: ModelConfig, vocab_size: int, *, labels_num: int, crf_target: bool = False) -> None:
        super().__init__(config, vocab_size)
        self.labels_num = labels_num
        self.output_layer = nn.Linear(config.hidden_size, labels_num)
        self.crf = CRF(labels_num) if crf_target else None

    def forward(self, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """batch: ``src``, ``seg`` (B, T), seg 0 = padding; optional ``tags`` (B, T). Logits: (B, T, labels_num)."""
        logits = self.output_layer(self.encode(batch["src"], batch["seg"]))
        if "tags" not in batch:
            return TaskOutput(None, logits)
        mask = batch["seg"] > 0
        if self.crf is not None:
            loss = -self.crf(F.log_softmax(logits.float(), dim=-1), batch["tags"], mask, reduction="mean")
        else:
            token_nll = F.cross_entropy(logits.float().transpose(1, 2), batch["tags"], reduction="none")  # (B, T)
            loss = (token_nll * mask).sum() / (mask.sum() + 1e-6)  # the original's masked mean
        return TaskOutput(loss, logits)

    @torch.no_grad()
    def tag(self, batch: dict[str, torch.Tensor]) -> list[list[int]]:
        """The predicted tag ids of each sequence's real tokens (Viterbi with a CRF, else the argmax)."""
        logits = self({"src": batch["src"], "seg": batch["seg"]}).logits  # no loss to compute
        mask = batch["seg"] > 0
        if self.crf is not None:
            return self.crf.decode(logits, mask)
        best = logits.argmax(dim=-1).tolist()
        return [row[:n] for row, n in zip(best, mask.sum(dim=1).tolist())]


# ---------------------------------------------------------------------- data
def read_ner(path: str, tokenizer: Tokenizer, labels: NerLabels, seq_length: int, *,
             with_labels: bool = True) -> list[Example]:
    """Examples of a NER TSV: ``src`` (token ids), ``seg`` (1s) and, read with labels, ``tags`` (tag ids)."""
    rows = read_tsv(path, ("text_a", "label") if with_labels else ("text_a",))
    examples = []
    for row in rows:
        tokens = _tokens(row)
        example: Example = {"src": [tokenizer.piece_to_id(t) for t in tokens][:seq_length],
                            "seg": [1] * min(len(tokens), seq_length)}
        if with_labels:
            example["tags"] = _tag_ids(row, labels, len(tokens))[:seq_length]
        examples.append(example)
    return examples


def _tokens(row: TsvRow) -> list[str]:
    """The space-separated tokens of ``text_a`` (the original's SpaceTokenizer: two spaces make an empty token)."""
    text = row.get("text_a").strip()
    if not text:
        raise row.error("text_a is empty; a NER line holds space-separated tokens and as many tags")
    return text.split(" ")


def _tag_ids(row: TsvRow, labels: NerLabels, tokens_num: int) -> list[int]:
    tags = row.get("label").strip().split(" ")
    if len(tags) != tokens_num:
        raise row.error(f"text_a has {tokens_num} tokens but label has {len(tags)} tags; both are separated by "
                        "single spaces, one tag per token")
    known = labels.file_labels()
    ids = []
    for position, tag in enumerate(tags, start=1):
        if tag not in known:
            raise row.error(f"the tag {tag!r} (token {position}) is not in {labels.path}, which has "
                            f"{', '.join(known)}")
        ids.append(known[tag])
    return ids


def collate_for(tokenizer: Tokenizer, labels: NerLabels):
    """Pad a batch to its longest sentence: [PAD] tokens, segment 0 and the [PAD] tag (none of which count)."""
    pad_token = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    return lambda examples: pad_batch(examples, {"src": pad_token, "seg": 0, "tags": labels.pad_id})


def predict_tags(model: NerTagger, examples: Sequence[Example], batch_size: int, collate
                 ) -> Iterator[tuple[list[Example], list[list[int]]]]:
    """(examples, their predicted tag ids) per batch, in order, with the model in eval mode."""
    device = next(model.parameters()).device
    model.eval()
    for chunk in batches(examples, batch_size):
        yield chunk, model.tag(to_device(collate(chunk), device))


# ---------------------------------------------------------------------- evaluation
def entity_spans(tags: Sequence[int], begin_ids: frozenset[int], outside_id: int) -> list[tuple[int, int]]:
    """(start, end) inclusive of every entity: from a begin tag to before the next ``O`` or begin tag, or the
    sentence's end."""
    spans = []
    for start, tag in enumerate(tags):
        if tag not in begin_ids:
            continue
        end = start
        while end + 1 < len(tags) and tags[end + 1] != outside_id and tags[end + 1] not in begin_ids:
            end += 1
        spans.append((start, end))
    return spans


@dataclass
class EntityCounts:
    correct: int = 0
    predicted: int = 0
    gold: int = 0

    def add(self, gold: Sequence[int], pred: Sequence[int], labels: NerLabels) -> None:
        """Count one sentence: ``gold`` and ``pred`` tag ids of its real tokens."""
        begin, outside = labels.begin_ids, labels.outside_id
        gold_spans = set(entity_spans(gold, begin, outside))
        pred_spans = entity_spans(pred, begin, outside)
        self.gold += len(gold_spans)
        self.predicted += len(pred_spans)
        self.correct += sum(span in gold_spans and gold[span[0]:span[1] + 1] == pred[span[0]:span[1] + 1]
                            for span in pred_spans)

    def scores(self) -> tuple[float, float, float]:
        """(precision, recall, F1) with the original's epsilons."""
        eps = 1e-9
        p = self.correct / (self.predicted + eps)
        r = self.correct / (self.gold + eps)
        return p, r, 2 * p * r / (p + r + eps)


def evaluate_ner(model: NerTagger, examples: Sequence[Example], labels: NerLabels, batch_size: int,
                 collate) -> float:
    """Entity F1 of ``model`` on labelled ``examples``, with the original's report lines."""
    counts = EntityCounts()
    for chunk, predicted in predict_tags(model, examples, batch_size, collate):
        for example, pred in zip(chunk, predicted):
            counts.add(list(example["tags"]), pred, labels)
    p, r, f1 = counts.scores()
    logger.info("Report precision, recall, and f1:")
    logger.info("%.3f, %.3f, %.3f", p, r, f1)
    return f1


# ---------------------------------------------------------------------- scripts
def add_ner_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sequence labelling")
    group.add_argument("--label2id_path", required=True,
                       help="JSON object mapping each tag to its id, e.g. datasets/msra_ner/label2id.json")
    group.add_argument("--crf_target", action="store_true",
                       help="a CRF over the tags (loss: its negative log-likelihood; prediction: Viterbi)")


def _labels_num(args: argparse.Namespace) -> dict:
    """The model's output count: the label2id file's tags plus [PAD] (overrides any --labels_num)."""
    return {"labels_num": len(NerLabels.load(args.label2id_path))}


def _load_labels(args: argparse.Namespace) -> NerLabels:
    labels = NerLabels.load(args.label2id_path)
    logger.info("Labels: %s", labels.file_labels())
    return labels


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_ner.py``."""
    run = parse_run(finetune_parser(__doc__, add_ner_flags, adversarial=False), argv, _labels_num)
    finetune_ner(run)


def finetune_ner(run: ParsedRun) -> None:
    options: FinetuneOptions = run.options(FinetuneOptions)
    with log_file(options.log_path):
        labels = _load_labels(run.args)
        seed_run(options)
        model = build_task_model(NerTagger, run.model_config, run.tokenizer.vocab_size,
                                 options.pretrained_model_path, labels_num=len(labels),
                                 crf_target=run.args.crf_target)

        def read(path: str) -> list[Example]:
            return read_ner(path, run.tokenizer, labels, options.seq_length)

        collate = collate_for(run.tokenizer, labels)
        fit_on_files(model, run.args, read, collate=collate,
                     evaluate=lambda m, ex: evaluate_ner(m, ex, labels, options.batch_size, collate))


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_ner_infer.py``."""
    run = parse_run(infer_parser(__doc__, add_ner_flags), argv, _labels_num)
    labels = _load_labels(run.args)
    options: InferOptions = run.options(InferOptions)
    model = NerTagger(run.model_config, run.tokenizer.vocab_size, labels_num=len(labels),
                      crf_target=run.args.crf_target)
    load_finetuned_weights(model, options.load_model_path)
    model.to(default_device())
    examples = read_ner(options.test_path, run.tokenizer, labels, options.seq_length, with_labels=False)
    require_examples(options.test_path, examples)
    write_tag_predictions(options.prediction_path, model, examples, labels, options.batch_size,
                          collate_for(run.tokenizer, labels))


def write_tag_predictions(path: str, model: NerTagger, examples: Sequence[Example], labels: NerLabels,
                          batch_size: int, collate) -> None:
    """The original's prediction file: ``pred_label``, then each input's tags, each followed by a space;
    written atomically, so a failure leaves no partial file."""
    names = labels.id_to_label
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(PREDICTION_HEADER + "\n")
        for _, predicted in predict_tags(model, examples, batch_size, collate):
            f.writelines("".join(names[t] + " " for t in tags) + "\n" for tags in predicted)
