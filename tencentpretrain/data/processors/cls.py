"""``cls`` and ``cls_mlm``: labelled text for pre-training a classifier (``target: ["cls"]``), alone or with a
masked-LM loss (``target: ["mlm", "cls"]``).

Corpus: ``label<TAB>text`` or ``label<TAB>text_a<TAB>text_b`` lines, the label an integer. As in the original:

- ``cls``: ``[CLS] text`` (no [SEP]), or ``[CLS] a [SEP] b [SEP]`` for a pair;
- ``cls_mlm``: ``[CLS] text [SEP]``, or ``[CLS] a [SEP] b [SEP]``; masked at batch time as ``mlm`` masks;

cut to ``seq_length`` tokens. Batches: ``src`` (B, T), ``seg`` 1 for the first segment, 2 for the second, 0 for
padding; ``tgt`` the labels (B,) for ``cls``, {"mlm": original ids (B, T), "cls": labels (B,)} for ``cls_mlm``
with ``loss_mask`` the masked positions. A blank line is skipped; another line that is not 2 or 3 fields with an
integer label is an error (the original skipped lines of other field counts silently; ``--skip_bad_lines``
counts and skips them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import FLAG_SEGMENT_B, FLAG_WORD_START, IndexedDataset
from tencentpretrain.data.processors.base import BadLine, Instance, Processor, SkipSample, check_targets
from tencentpretrain.data.processors.mlm import MaskedLmProcessor, MlmCollator
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.targets.output import LABELS_CLASS, LABELS_MASKED_TOKENS
from tencentpretrain.tokenizers.base import Tokenizer


def parse_labelled(line: str) -> tuple[int, list[str]]:
    """(label, [text] or [text_a, text_b]) of a ``label<TAB>text[<TAB>text_b]`` line."""
    if not line.strip():
        raise SkipSample("empty_line")
    fields = line.strip().split("\t")
    if len(fields) not in (2, 3):
        raise BadLine("bad_fields", f"expected label<TAB>text or label<TAB>text_a<TAB>text_b, got {len(fields)} "
                      "tab-separated fields")
    try:
        label = int(fields[0])
    except ValueError:
        raise BadLine("bad_label", f"the label {fields[0][:20]!r} is not an integer") from None
    return label, fields[1:]


def segment_flags(first: int, second: int, word_flags: np.ndarray | None = None) -> np.ndarray:
    """FLAG_WORD_START (or ``word_flags``) on every token, FLAG_SEGMENT_B on the ``second`` tokens after ``first``."""
    flags = np.full(first + second, FLAG_WORD_START, dtype=np.uint8) if word_flags is None else word_flags.copy()
    flags[first:] |= FLAG_SEGMENT_B
    return flags


def segments(flags: np.ndarray) -> np.ndarray:
    """Segment ids (L,): 1 for the first segment, 2 for tokens with FLAG_SEGMENT_B."""
    return np.where(flags & FLAG_SEGMENT_B, 2, 1)


@DATA_PROCESSORS.register("cls")
class ClsProcessor(Processor):
    """Labelled lines -> ``[CLS] text`` / ``[CLS] a [SEP] b [SEP]`` with segment flags and the label."""

    name = "cls"
    uses_mask = False
    cuts_instances = False
    has_token_flags = True
    has_labels = True
    provides_labels = (LABELS_CLASS,)

    def __init__(self, tokenizer: Tokenizer, config: DataConfig) -> None:
        super().__init__(tokenizer, config)
        self.max_tokens = config.seq_length
        self.cls_id = self.require_special("bos_id", "[CLS] (beginning-of-sequence)")
        self.sep_id = self.require_special("eos_id", "[SEP] (end-of-sequence)")

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        label, texts = parse_labelled(line)
        first = [self.cls_id, *self.tokenizer.encode(texts[0])]
        second = [*self.tokenizer.encode(texts[1]), self.sep_id] if len(texts) == 2 else []
        if second:
            first.append(self.sep_id)
        ids = np.asarray(first + second, dtype=np.int64)[: self.max_tokens]
        flags = segment_flags(len(first), len(second))[: self.max_tokens]
        return [Instance(ids, None, flags, label)]

    @classmethod
    def build_collator(cls, dataset: IndexedDataset, *, seq_length: int, seed: int, model_config: Any = None):
        check_targets(cls.name, cls.provides_labels, model_config)
        return ClsCollator(dataset, seq_length)


class ClsCollator:
    """Batch(src (B, T), tgt labels (B,), seg 1/2/0 (B, T), loss_mask = real tokens)."""

    def __init__(self, dataset: IndexedDataset, seq_length: int) -> None:
        self.dataset, self.seq_length = dataset, seq_length

    def __call__(self, indices: Sequence[int], epoch: int) -> Any:
        from tencentpretrain.data.loader import Batch  # the loader imports this package

        src = np.full((len(indices), self.seq_length), self.dataset.pad_id, dtype=np.int64)  # (B, T)
        seg = np.zeros_like(src)
        for b, index in enumerate(indices):
            ids = np.asarray(self.dataset[int(index)][0], dtype=np.int64)
            src[b, : len(ids)], seg[b, : len(ids)] = ids, segments(np.asarray(self.dataset.flags(int(index))))
        labels = np.asarray([self.dataset.label(int(i)) for i in indices], dtype=np.int64)
        return Batch(torch.from_numpy(src), torch.from_numpy(labels), torch.from_numpy(seg), torch.from_numpy(seg > 0))


@DATA_PROCESSORS.register("cls_mlm")
class ClsMlmProcessor(MaskedLmProcessor):
    """Labelled lines -> unmasked ``[CLS] text [SEP]`` / ``[CLS] a [SEP] b [SEP]``, masked at batch time."""

    name = "cls_mlm"
    has_labels = True
    provides_labels = (LABELS_MASKED_TOKENS, LABELS_CLASS)

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        label, texts = parse_labelled(line)
        ids_a, flags_a = self.words.encode(texts[0])
        parts = [[self.cls_id], ids_a, [self.sep_id]]
        flag_parts = [[FLAG_WORD_START], flags_a, [FLAG_WORD_START]]
        first = len(ids_a) + 2
        if len(texts) == 2:
            ids_b, flags_b = self.words.encode(texts[1])
            parts += [ids_b, [self.sep_id]]
            flag_parts += [flags_b, [FLAG_WORD_START]]
        ids = np.concatenate(parts).astype(np.int64)
        flags = np.concatenate(flag_parts).astype(np.uint8)
        flags[first:] |= FLAG_SEGMENT_B
        instance = Instance(ids[: self.max_tokens], None, flags[: self.max_tokens], label)
        return [instance] * self.copies

    @classmethod
    def build_collator(cls, dataset: IndexedDataset, *, seq_length: int, seed: int, model_config: Any = None):
        routes = check_targets(cls.name, cls.provides_labels, model_config)
        names = {LABELS_MASKED_TOKENS: "mlm", LABELS_CLASS: "cls", **routes}
        return ClsMlmCollator(dataset, seq_length, seed, names)


class ClsMlmCollator(MlmCollator):
    """``mlm`` masking plus the labels and the two segments: tgt {mlm: (B, T), cls: (B,)}."""

    def __init__(self, dataset: IndexedDataset, seq_length: int, seed: int, target_names: dict[str, str]) -> None:
        super().__init__(dataset, seq_length, seed)
        self.target_names = target_names

    def __call__(self, indices: Sequence[int], epoch: int) -> Any:
        batch = super().__call__(indices, epoch)
        seg = batch.seg.clone()
        for b, index in enumerate(indices):
            flags = np.asarray(self.dataset.flags(int(index)))
            seg[b, : len(flags)] = torch.from_numpy(segments(flags))
        labels = torch.tensor([self.dataset.label(int(i)) for i in indices], dtype=torch.int64)
        tgt = {self.target_names[LABELS_MASKED_TOKENS]: batch.tgt, self.target_names[LABELS_CLASS]: labels}
        return batch._replace(tgt=tgt, seg=seg)
