"""``t5``: span corruption for encoder-decoder pre-training (T5).

One document per line, tokenized and cut into chunks whose corrupted forms fit: 15% of a chunk's tokens, in
spans of mean length 3, are dropped from the encoder input, each span replaced by one sentinel token; the decoder
predicts each sentinel followed by the tokens it replaced, then the end token::

    chunk   x1 x2 x3 x4 x5 x6 x7 x8
    src     x1 <extra_id_0> x4 x5 x6 <extra_id_1> </s>               (seq_length wide)
    tgt     <extra_id_0> x2 x3 <extra_id_1> x7 x8 </s>               (tgt_seq_length wide)
    tgt_in  <pad> <extra_id_0> x2 x3 <extra_id_1> x7 x8              (T5's decoder starts from the pad id)

The chunk length is the longest whose corruption fits ``seq_length`` (input) and ``tgt_seq_length`` (target).
Chunks are stored uncorrupted; the collator draws the spans from the seed and the instance index (and the epoch,
with ``--dynamic_masking``). Sentinels are the vocabulary's ``<extra_id_0>``, ``<extra_id_1>``, ... (HF T5) or
``extra0``, ``extra1``, ... (UER's Chinese T5 vocabularies); a chunk gets at most as many spans as there are.
Batches are ``Seq2SeqBatch(src, tgt, seg, loss_mask, tgt_in, tgt_seg)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import IndexedDataset
from tencentpretrain.data.masking import SALT_T5, instance_rng, random_spans_noise_mask, sentinel_ids, t5_span_counts
from tencentpretrain.data.processors.base import Instance, Processor, SkipSample, check_targets
from tencentpretrain.errors import ConfigError, TokenizerError
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.tokenizers.base import Tokenizer

NOISE_DENSITY = 0.15  # T5's corruption rate
MEAN_SPAN_LENGTH = 3.0  # T5's mean noise span length


def corrupted_lengths(length: int, max_spans: int) -> tuple[int, int]:
    """(encoder input length, target length) of a ``length``-token chunk, end tokens included."""
    noise, spans = t5_span_counts(length, NOISE_DENSITY, MEAN_SPAN_LENGTH, max_spans)
    return length - noise + spans + 1, noise + spans + 1


def longest_chunk(seq_length: int, tgt_seq_length: int, max_spans: int) -> int:
    """The longest chunk whose corrupted input and target fit (both lengths grow with the chunk length)."""
    best = 0
    for length in range(2, 2 * seq_length + 2):
        src_len, tgt_len = corrupted_lengths(length, max_spans)
        if src_len > seq_length or tgt_len > tgt_seq_length:
            break
        best = length
    return best


@DATA_PROCESSORS.register("t5")
class T5Processor(Processor):
    """Plain text, one document per line -> uncorrupted chunks; span corruption happens at batch time."""

    name = "t5"
    uses_mask = False
    cuts_instances = False

    def __init__(self, tokenizer: Tokenizer, config: DataConfig) -> None:
        super().__init__(tokenizer, config)
        self.eos_id = self.require_special("eos_id", "end-of-sequence")
        self.sentinels = sentinel_ids(tokenizer)
        if not self.sentinels:
            raise TokenizerError(
                f"data processor 't5' needs sentinel tokens (<extra_id_0>, <extra_id_1>, ... or extra0, extra1, ...) "
                f"in the vocabulary of tokenizer {tokenizer.name!r}"
            )
        self.max_tokens = longest_chunk(config.seq_length, config.tgt_seq_length, len(self.sentinels))
        if self.max_tokens < 2:
            raise ConfigError(f"--seq_length {config.seq_length} / --tgt_seq_length {config.tgt_seq_length} leave "
                              "no room for a corrupted span; use longer sequences")

    def options(self) -> dict[str, Any]:
        return {
            "seq_length": self.config.seq_length,
            "tgt_seq_length": self.config.tgt_seq_length,
            "chunk_length": self.max_tokens,
            "dynamic_masking": self.config.dynamic_masking,
            "noise_density": NOISE_DENSITY,
            "mean_span_length": MEAN_SPAN_LENGTH,
            "sentinel_ids": self.sentinels,
            "eos_id": self.eos_id,
        }

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        text = line.strip()
        if not text:
            raise SkipSample("empty_line")
        ids = self.tokenizer.encode_array(text)
        chunks = [ids[s : s + self.max_tokens] for s in range(0, len(ids), self.max_tokens)]
        kept = [Instance(c, None) for c in chunks if len(c) >= 2]
        if len(kept) < len(chunks):
            stats["skipped:empty_loss"] += len(chunks) - len(kept)
        if not kept:
            raise SkipSample("short_document")
        return kept

    @classmethod
    def build_collator(cls, dataset: IndexedDataset, *, seq_length: int, seed: int, model_config: Any = None):
        if model_config is not None and model_config.decoder is None:
            raise ConfigError("data processor 't5' trains an encoder-decoder model, and the model config has no "
                              "\"decoder\" (use models/t5/*_config.json)")
        check_targets(cls.name, cls.provides_labels, model_config)
        return SpanCorruptionCollator(dataset, seq_length, seed)


class SpanCorruptionCollator:
    """Corrupts stored chunks into encoder inputs and decoder targets: see the module docstring."""

    def __init__(self, dataset: IndexedDataset, seq_length: int, seed: int) -> None:
        options = dataset.options
        self.dataset, self.seq_length, self.seed = dataset, seq_length, seed
        self.tgt_length = int(options["tgt_seq_length"])
        self.sentinels = np.asarray(options["sentinel_ids"], dtype=np.int64)
        self.eos_id = int(options["eos_id"])
        self.dynamic = bool(options["dynamic_masking"])

    def corrupt(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(encoder input, target) ids of one chunk, each ending with the end token."""
        noise = random_spans_noise_mask(len(tokens), NOISE_DENSITY, MEAN_SPAN_LENGTH, len(self.sentinels), rng)
        starts = noise & ~np.concatenate(([False], noise[:-1]))  # first token of each span
        span_index = np.cumsum(starts) - 1  # which sentinel a noise token belongs to
        src = np.where(starts, self.sentinels[np.maximum(span_index, 0)], tokens)[~noise | starts]
        tgt_parts = []
        for k, (start, end) in enumerate(_runs(noise)):
            tgt_parts.extend(([self.sentinels[k]], tokens[start:end]))
        tgt = np.concatenate(tgt_parts + [[self.eos_id]]).astype(np.int64)
        return np.concatenate((src, [self.eos_id])).astype(np.int64), tgt

    def __call__(self, indices: Sequence[int], epoch: int) -> Any:
        from tencentpretrain.data.loader import Seq2SeqBatch  # the loader imports this package

        rows, pad = len(indices), self.dataset.pad_id
        src = np.full((rows, self.seq_length), pad, dtype=np.int64)  # (B, T)
        tgt = np.full((rows, self.tgt_length), pad, dtype=np.int64)  # (B, T')
        tgt_in = tgt.copy()
        seg = np.zeros_like(src)
        tgt_seg = np.zeros_like(tgt)
        for b, index in enumerate(indices):
            rng = instance_rng(self.seed, SALT_T5, int(index), epoch if self.dynamic else None)
            source, target = self.corrupt(np.asarray(self.dataset[int(index)][0], dtype=np.int64), rng)
            src[b, : len(source)], seg[b, : len(source)] = source, 1
            tgt[b, : len(target)], tgt_seg[b, : len(target)] = target, 1
            tgt_in[b, 1 : len(target)] = target[:-1]  # tgt_in[b, 0] stays the pad id: T5's decoder start
        tensors = [torch.from_numpy(a) for a in (src, tgt, seg)]
        return Seq2SeqBatch(*tensors, torch.from_numpy(tgt_seg > 0), torch.from_numpy(tgt_in),
                            torch.from_numpy(tgt_seg))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
