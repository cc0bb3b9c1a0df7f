"""``bert`` and ``albert``: sentence pairs for BERT's masked LM plus a sentence-pair (``sp``) task.

Corpus: the original's format, one sentence per line, documents separated by blank lines. Each document is cut
into chunks of sentences of about ``seq_length - 3`` tokens (a random shorter length with ``--short_seq_prob``);
a chunk is split at a random sentence boundary into A and B (a one-sentence chunk at a random token), and the
pair is trimmed to fit ``[CLS] A [SEP] B [SEP]`` into ``seq_length``. ``--dup_factor`` copies of each document are
cut, each with its own random choices (keyed by the document's text, so the output does not depend on
``--processes_num``).

The stored pair is always the true continuation, unmasked. The collator decides per instance, from the seed,
the instance index and (with ``--dynamic_masking``) the epoch:

- ``bert``, next-sentence prediction: with probability 1/2 B is replaced by the B of another random instance
  (cut to fit) and the ``sp`` label is 0, else 1;
- ``albert``, sentence-order prediction: with probability 1/2 A and B are swapped (label 0), else kept (label 1);

then masks the pair as ``mlm`` does. Batches: ``src`` (B, T), ``tgt`` {"mlm": original ids (B, T), "sp": labels
(B,)}, ``seg`` 1 for [CLS] A [SEP], 2 for B [SEP], 0 for padding, ``loss_mask`` the masked positions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tencentpretrain.data.dataset import FLAG_SEGMENT_B, FLAG_WORD_START, IndexedDataset
from tencentpretrain.data.masking import SALT_PAIR, instance_rng, masker, text_rng
from tencentpretrain.data.processors.base import Instance, SkipSample, check_targets
from tencentpretrain.data.processors.mlm import MaskedLmProcessor, masking_spec
from tencentpretrain.errors import ConfigError
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.targets.output import LABELS_MASKED_TOKENS, LABELS_SENTENCE_PAIR

Pair = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # ids A, flags A, ids B, flags B


# The tgt keys when the model config is unknown: the targets BERT's own configs name.
DEFAULT_PAIR_TARGETS = {LABELS_MASKED_TOKENS: "mlm", LABELS_SENTENCE_PAIR: "sp"}


@DATA_PROCESSORS.register("bert")
class BertProcessor(MaskedLmProcessor):
    """Documents -> unmasked [CLS] A [SEP] B [SEP] pairs (B follows A), with word and segment flags."""

    name = "bert"
    provides_labels = (LABELS_MASKED_TOKENS, LABELS_SENTENCE_PAIR)
    pair_task = "nsp"
    reads_documents = True

    def __init__(self, tokenizer: Any, config: Any) -> None:
        super().__init__(tokenizer, config)
        if config.seq_length < 5:
            raise ConfigError(f"data processor {self.name!r} needs --seq_length >= 5 ([CLS] A [SEP] B [SEP]), "
                              f"got {config.seq_length}")

    def options(self) -> dict[str, Any]:
        return {**super().options(), "short_seq_prob": self.config.short_seq_prob, "pair_task": self.pair_task}

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        sentences = [self.words.encode(s.strip()) for s in line.splitlines() if s.strip()]
        sentences = [(ids, flags) for ids, flags in sentences if len(ids)]
        if not sentences:
            raise SkipSample("empty_line")
        instances = []
        for copy in range(self.copies):
            rng = text_rng(self.config.seed, SALT_PAIR, line, copy)
            instances.extend(self._instance(pair) for pair in self._pairs(sentences, rng))
        if not instances:
            raise SkipSample("short_document")
        return instances

    def _pairs(self, sentences: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> list[Pair]:
        """Chunks of consecutive sentences of about the target length, each split into A and B."""
        longest = self.max_tokens - 3
        target = longest
        if rng.random() < self.config.short_seq_prob:
            target = int(rng.integers(2, max(longest, 2) + 1))
        pairs, chunk, length = [], [], 0
        for i, sentence in enumerate(sentences):
            chunk.append(sentence)
            length += len(sentence[0])
            if i == len(sentences) - 1 or length >= target:
                pair = _split_chunk(chunk, rng)
                if pair is not None:
                    pairs.append(_trim_pair(pair, longest, rng))
                chunk, length = [], 0
        return pairs

    def _instance(self, pair: Pair) -> Instance:
        ids_a, flags_a, ids_b, flags_b = pair
        ids = np.concatenate(([self.cls_id], ids_a, [self.sep_id], ids_b, [self.sep_id]))
        start = np.uint8(FLAG_WORD_START)
        flags = np.concatenate(([start], flags_a, [start], flags_b | FLAG_SEGMENT_B, [start | FLAG_SEGMENT_B]))
        return Instance(ids, None, flags.astype(np.uint8))

    @classmethod
    def build_collator(cls, dataset: IndexedDataset, *, seq_length: int, seed: int, model_config: Any = None):
        routes = check_targets(cls.name, cls.provides_labels, model_config)
        return PairCollator(dataset, seq_length, seed, target_names={**DEFAULT_PAIR_TARGETS, **routes})


@DATA_PROCESSORS.register("albert")
class AlbertProcessor(BertProcessor):
    """``bert`` with ALBERT's sentence-order prediction instead of next-sentence prediction."""

    name = "albert"
    pair_task = "sop"


def _split_chunk(chunk: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> Pair | None:
    if len(chunk) >= 2:
        a_end = int(rng.integers(1, len(chunk)))
        a, b = chunk[:a_end], chunk[a_end:]
        return (np.concatenate([s[0] for s in a]), np.concatenate([s[1] for s in a]),
                np.concatenate([s[0] for s in b]), np.concatenate([s[1] for s in b]))
    ids, flags = chunk[0]
    if len(ids) < 2:
        return None  # a one-token document: no pair
    cut = int(rng.integers(1, len(ids)))
    return ids[:cut], flags[:cut], ids[cut:], flags[cut:]


def _trim_pair(pair: Pair, longest: int, rng: np.random.Generator) -> Pair:
    """Drop tokens from the longer side, at its front or its end at random, until len(A) + len(B) <= longest."""
    ids_a, flags_a, ids_b, flags_b = pair
    while len(ids_a) + len(ids_b) > longest:
        excess = len(ids_a) + len(ids_b) - longest
        if len(ids_a) >= len(ids_b):
            n = min(excess, len(ids_a) - max(len(ids_b), 1)) or 1
            ids_a, flags_a = (ids_a[n:], flags_a[n:]) if rng.random() < 0.5 else (ids_a[:-n], flags_a[:-n])
        else:
            n = min(excess, len(ids_b) - len(ids_a)) or 1
            ids_b, flags_b = (ids_b[n:], flags_b[n:]) if rng.random() < 0.5 else (ids_b[:-n], flags_b[:-n])
    return ids_a, flags_a, ids_b, flags_b


class PairCollator:
    """Builds the sentence-pair task (NSP or SOP) and masks: see the module docstring."""

    def __init__(self, dataset: IndexedDataset, seq_length: int, seed: int,
                 target_names: dict[str, str] = DEFAULT_PAIR_TARGETS) -> None:
        """target_names: {label kind: the model's target that scores it}, the keys of the batches' ``tgt``."""
        self.dataset, self.seq_length, self.seed = dataset, seq_length, seed
        self.target_names = target_names
        self.spec = masking_spec(dataset)
        self.pool = self.spec.random_pool()
        self.dynamic = bool(dataset.options["dynamic_masking"])
        self.task = dataset.options["pair_task"]
        self.specials = np.asarray(self.spec.special_ids)
        self.mask = masker(dataset.options)

    def _halves(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ids A, flags A, ids B, flags B) of a stored instance, without [CLS] and the [SEP]s."""
        tokens = np.asarray(self.dataset[index][0], dtype=np.int64)
        flags = np.asarray(self.dataset.flags(index))
        b_start = int(np.argmax(flags & FLAG_SEGMENT_B))  # first token of B
        return tokens[1 : b_start - 1], flags[1 : b_start - 1], tokens[b_start:-1], flags[b_start:-1]

    def _pair(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        ids_a, flags_a, ids_b, flags_b = self._halves(index)
        if rng.random() >= 0.5:
            return ids_a, flags_a, ids_b, flags_b, 1
        if self.task == "sop" or len(self.dataset) < 2:
            return ids_b, flags_b & ~np.uint8(FLAG_SEGMENT_B), ids_a, flags_a | FLAG_SEGMENT_B, 0
        other = int(rng.integers(len(self.dataset) - 1))
        other += other >= index
        _, _, other_b, other_flags = self._halves(other)
        room = self.seq_length - 3 - len(ids_a)
        return ids_a, flags_a, other_b[:room], other_flags[:room], 0

    def __call__(self, indices: Sequence[int], epoch: int) -> Any:
        from tencentpretrain.data.loader import Batch  # the loader imports this package

        rows, width = len(indices), self.seq_length
        src = np.full((rows, width), self.dataset.pad_id, dtype=np.int64)  # (B, T)
        tgt, seg = src.copy(), np.zeros((rows, width), dtype=np.int64)
        loss_mask = np.zeros((rows, width), dtype=bool)
        labels = np.zeros(rows, dtype=np.int64)
        for b, index in enumerate(indices):
            rng = instance_rng(self.seed, SALT_PAIR, int(index), epoch if self.dynamic else None)
            tokens = np.asarray(self.dataset[int(index)][0], dtype=np.int64)
            cls_id, sep_id = int(tokens[0]), int(tokens[-1])
            ids_a, flags_a, ids_b, flags_b, labels[b] = self._pair(int(index), rng)
            ids = np.concatenate(([cls_id], ids_a, [sep_id], ids_b, [sep_id]))
            flags = np.concatenate(([FLAG_WORD_START], flags_a, [FLAG_WORD_START], flags_b, [FLAG_WORD_START]))
            masked, scored = self.mask(ids, flags.astype(np.uint8), ~np.isin(ids, self.specials), rng, self.spec,
                                       self.pool)
            n, a_len = len(ids), len(ids_a) + 2
            src[b, :n], tgt[b, :n], loss_mask[b, :n] = masked, ids, scored
            seg[b, :a_len], seg[b, a_len:n] = 1, 2
        tgt_dict = {self.target_names[LABELS_MASKED_TOKENS]: torch.from_numpy(tgt),
                    self.target_names[LABELS_SENTENCE_PAIR]: torch.from_numpy(labels)}
        return Batch(torch.from_numpy(src), tgt_dict, torch.from_numpy(seg), torch.from_numpy(loss_mask))
