"""``bart``: BART's denoising, as the original builds it: sentence permutation at preprocessing, text infilling at
batch time.

Corpus: one sentence per line, documents separated by blank lines (the ``bert`` format). Sentences longer than
``seq_length - 2`` tokens are dropped; the others are gathered into chunks while their total stays under
``seq_length - 2`` tokens. Each chunk is stored as the pair (``[CLS]`` its sentences in a random order ``[SEP]``,
``[CLS]`` its sentences in order ``[SEP]``); ``--dup_factor`` copies of each document are made, each permuted
anew (1 copy with ``--dynamic_masking``, as the original set ``--dup_factor 1`` then; keyed by the
document's text, so the output does not depend on ``--processes_num``).

At batch time the source is masked as ``mlm`` masks (15% of its tokens; 80% ``[MASK]``, 10% a random token, 10%
kept; ``--whole_word_masking``/``--span_masking`` apply) and every run of consecutive ``[MASK]`` is collapsed into
one, so the decoder must infill spans of unknown length. Like the original, which masked in its data loader,
every epoch draws new masks. Batches: ``seq2seq`` with decoder width ``seq_length - 1``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from tencentpretrain.data.dataset import IndexedDataset
from tencentpretrain.data.masking import instance_rng, masker, text_rng
from tencentpretrain.data.processors.base import Instance, SkipSample, check_targets
from tencentpretrain.data.processors.mlm import MaskedLmProcessor, masking_spec
from tencentpretrain.data.processors.seq2seq import PairCollator, pair_instance, require_decoder
from tencentpretrain.registry import DATA_PROCESSORS

SALT_BART_PERMUTE, SALT_BART_MASK = 6, 7

Sentence = tuple[np.ndarray, np.ndarray]  # ids, word flags


@DATA_PROCESSORS.register("bart")
class BartProcessor(MaskedLmProcessor):
    """Documents -> (permuted sentences, sentences in order) pairs; the source is masked at batch time."""

    name = "bart"
    reads_documents = True

    def options(self) -> dict[str, Any]:
        return {**super().options(), "tgt_width": self.config.seq_length - 1}

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        room = self.config.seq_length - 2
        sentences = [self.words.encode(s.strip()) for s in line.splitlines() if s.strip()]
        sentences = [s for s in sentences if 0 < len(s[0]) <= room]
        if not sentences:
            raise SkipSample("short_document")
        instances = []
        for copy in range(self.copies):
            rng = text_rng(self.config.seed, SALT_BART_PERMUTE, line, copy)
            instances.extend(self._instance(chunk, rng) for chunk in chunks_under(sentences, room))
        return instances

    def _instance(self, chunk: list[Sentence], rng: np.random.Generator) -> Instance:
        order = rng.permutation(len(chunk))
        start = np.asarray([self.cls_id]), np.asarray([self.sep_id])
        src = np.concatenate((start[0], *(chunk[k][0] for k in order), start[1]))
        src_flags = np.concatenate(([1], *(chunk[k][1] for k in order), [1]))
        tgt = np.concatenate((start[0], *(s[0] for s in chunk), start[1]))
        return pair_instance(src, tgt, src_flags)

    @classmethod
    def build_collator(cls, dataset: IndexedDataset, *, seq_length: int, seed: int, model_config: Any = None):
        require_decoder(cls.name, model_config)
        check_targets(cls.name, cls.provides_labels, model_config)
        return InfillingCollator(dataset, seq_length, seed)


def chunks_under(sentences: list[Sentence], room: int) -> list[list[Sentence]]:
    """Consecutive sentences gathered while their total length stays under ``room`` (the original's rule: a
    sentence that would bring the chunk to ``room`` tokens or more starts the next chunk)."""
    chunks: list[list[Sentence]] = []
    chunk: list[Sentence] = []
    length = 0
    for sentence in sentences:
        if chunk and length + len(sentence[0]) >= room:
            chunks.append(chunk)
            chunk, length = [], 0
        chunk.append(sentence)
        length += len(sentence[0])
    if chunk:
        chunks.append(chunk)
    return chunks


class InfillingCollator(PairCollator):
    """Masks the source and collapses runs of [MASK] (see the module docstring)."""

    def __init__(self, dataset: IndexedDataset, seq_length: int, seed: int) -> None:
        super().__init__(dataset, seq_length, seed)
        self.spec = masking_spec(dataset)
        self.pool = self.spec.random_pool()
        self.specials = np.asarray(self.spec.special_ids)
        self.mask = masker(dataset.options)

    def source(self, index: int, ids: np.ndarray, flags: np.ndarray, epoch: int) -> np.ndarray:
        rng = instance_rng(self.seed, SALT_BART_MASK, index, epoch)
        masked, _ = self.mask(ids, flags, ~np.isin(ids, self.specials), rng, self.spec, self.pool)
        return collapse_mask_runs(masked, self.spec.mask_id)


def collapse_mask_runs(ids: np.ndarray, mask_id: int) -> np.ndarray:
    """``ids`` with each run of consecutive ``mask_id`` replaced by a single one."""
    is_mask = ids == mask_id
    repeated = is_mask & np.concatenate(([False], is_mask[:-1]))
    return ids[~repeated]
