"""What the encoder-decoder processors (``mt``, ``gsg``, ``bart``) share: how a (source, target) pair is stored
and how it becomes a ``Seq2SeqBatch``, as the original's MtDataloader built it.

A pair is stored as one record: the source ids, then the target ids with FLAG_SEGMENT_B set on each target token
(the target is ``[CLS] ... [SEP]``, its own vocabulary's ids for ``mt``). A batch row is::

    src     the source, padded to seq_length                    seg      1 for its tokens, 0 for padding
    tgt_in  target[:-1], padded to the processor's target width  tgt_seg  1 for its tokens, 0 for padding
    tgt     target[1:], padded likewise                         loss_mask = tgt_seg > 0

The target width is the original's: ``tgt_seq_length`` for ``mt`` (targets keep up to ``tgt_seq_length + 1``
tokens), ``tgt_seq_length - 1`` for ``gsg``, ``seq_length - 1`` for ``bart`` (whose targets are padded like its
sources). A processor may change the source at batch time (``bart`` masks it) by overriding ``source``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tencentpretrain.data.dataset import FLAG_SEGMENT_B, FLAG_WORD_START, IndexedDataset
from tencentpretrain.data.processors.base import Instance
from tencentpretrain.errors import ConfigError


def pair_instance(source: Sequence[int], target: Sequence[int], source_flags: Sequence[int] | None = None) -> Instance:
    """The stored record of a (source, target) pair; ``source_flags`` are the source's word flags (default: every
    token starts a word)."""
    src = np.asarray(source, dtype=np.int64)
    tgt = np.asarray(target, dtype=np.int64)
    src_flags = (np.full(len(src), FLAG_WORD_START, dtype=np.uint8) if source_flags is None
                 else np.asarray(source_flags, dtype=np.uint8))
    tgt_flags = np.full(len(tgt), FLAG_WORD_START | FLAG_SEGMENT_B, dtype=np.uint8)
    return Instance(np.concatenate((src, tgt)), None, np.concatenate((src_flags, tgt_flags)))


def split_pair(tokens: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source ids, source flags, target ids) of a stored pair."""
    start = int(np.argmax(flags & FLAG_SEGMENT_B))  # first target token (a target is never empty)
    return tokens[:start], flags[:start], tokens[start:]


def require_decoder(processor: str, model_config: Any) -> None:
    if model_config is not None and model_config.decoder is None:
        raise ConfigError(f"data processor {processor!r} trains an encoder-decoder model, and the model config has "
                          "no \"decoder\" (use models/t5, models/bart, models/pegasus or models/transformer configs)")


class PairCollator:
    """Stored pairs -> Seq2SeqBatch (see the module docstring)."""

    def __init__(self, dataset: IndexedDataset, seq_length: int, seed: int) -> None:
        self.dataset, self.seq_length, self.seed = dataset, seq_length, seed
        self.tgt_width = int(dataset.options["tgt_width"])

    def source(self, index: int, ids: np.ndarray, flags: np.ndarray, epoch: int) -> np.ndarray:
        """The encoder input of instance ``index`` (the stored source; ``bart`` masks it)."""
        return ids

    def __call__(self, indices: Sequence[int], epoch: int) -> Any:
        from tencentpretrain.data.loader import Seq2SeqBatch  # the loader imports this package

        rows, pad = len(indices), self.dataset.pad_id
        src = np.full((rows, self.seq_length), pad, dtype=np.int64)  # (B, T)
        tgt = np.full((rows, self.tgt_width), pad, dtype=np.int64)  # (B, T')
        tgt_in = tgt.copy()
        seg, tgt_seg = np.zeros_like(src), np.zeros_like(tgt)
        for b, index in enumerate(indices):
            tokens = np.asarray(self.dataset[int(index)][0], dtype=np.int64)
            ids, flags, target = split_pair(tokens, np.asarray(self.dataset.flags(int(index))))
            source = self.source(int(index), ids, flags, epoch)
            n, m = len(source), len(target) - 1
            src[b, :n], seg[b, :n] = source, 1
            tgt_in[b, :m], tgt[b, :m], tgt_seg[b, :m] = target[:-1], target[1:], 1
        tensors = [torch.from_numpy(a) for a in (src, tgt, seg)]
        return Seq2SeqBatch(*tensors, torch.from_numpy(tgt_seg > 0), torch.from_numpy(tgt_in),
                            torch.from_numpy(tgt_seg))
