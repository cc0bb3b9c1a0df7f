"""``t5``: span corruption for encoder-decoder pre-training (T5), as the original builds it.

Instances are ``mlm``'s: ``[CLS] document [SEP]`` cut into ``seq_length`` tokens (``--full_sentences`` packs the
documents back to back), stored unmasked. At batch time the tokens are masked as ``mlm`` masks them (15% of the
maskable tokens, single tokens, whole words with ``--whole_word_masking`` or spans with ``--span_masking``), and
each run of consecutive masked tokens becomes one sentinel in the encoder input; the decoder predicts each
sentinel followed by the tokens it replaced, then one more sentinel and ``[SEP]``::

    tokens  [CLS] x1 x2 x3 x4 x5 x6 [SEP]          (x2 x3 and x5 masked)
    src     [CLS] x1 s0 x4 s1 x6 [SEP]              (padded to seq_length)
    tgt_in  [CLS] s0 x2 x3 s1 x5 s2 [SEP]           (the decoder starts from [CLS])
    tgt     s0 x2 x3 s1 x5 s2 [SEP] [PAD]

Sentinels are the vocabulary's ``<extra_id_0>``, ``<extra_id_1>``, ... (or ``extra0``, ...), in order; when a
sequence has more spans than the vocabulary has sentinels the last one is reused (the original reused the last id
of the vocabulary). Masks are drawn from the seed and the instance index (and the epoch with
``--dynamic_masking``); the decoder side is padded to the longest target of the batch, as in the original.
``loss_mask`` scores every target token up to ``[SEP]``; the original also scored the prediction of ``[PAD]``
after it. Batches are ``Seq2SeqBatch(src, tgt, seg, loss_mask, tgt_in, tgt_seg)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import IndexedDataset
from tencentpretrain.data.masking import MASK_TOKEN_NAMES, SALT_T5, find_piece, instance_rng, sentinel_ids
from tencentpretrain.data.processors.base import check_targets
from tencentpretrain.data.processors.mlm import MlmCollator, MlmProcessor
from tencentpretrain.data.processors.seq2seq import require_decoder
from tencentpretrain.errors import DataError, TokenizerError
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.targets.output import LABELS_NEXT_TOKENS
from tencentpretrain.tokenizers.base import Tokenizer


@DATA_PROCESSORS.register("t5")
class T5Processor(MlmProcessor):
    """``mlm`` instances, corrupted into sentinel spans at batch time."""

    name = "t5"
    provides_labels = (LABELS_NEXT_TOKENS,)

    def __init__(self, tokenizer: Tokenizer, config: DataConfig) -> None:
        self.sentinels = sentinel_ids(tokenizer)
        if not self.sentinels:
            raise TokenizerError(
                f"data processor 't5' needs sentinel tokens (<extra_id_0>, <extra_id_1>, ... or extra0, extra1, ...) "
                f"in the vocabulary of tokenizer {tokenizer.name!r} (e.g. models/google_zh_with_sentinel_vocab.txt)"
            )
        super().__init__(tokenizer, config)

    def find_mask_id(self, tokenizer: Tokenizer) -> int:
        """[MASK] when the vocabulary has one; masked tokens only mark positions here, so the first sentinel
        stands in for it otherwise (T5's own vocabularies have none)."""
        mask_id = find_piece(tokenizer, MASK_TOKEN_NAMES)
        return self.sentinels[0] if mask_id is None else mask_id

    def options(self) -> dict[str, Any]:
        return {**super().options(), "sentinel_ids": self.sentinels}

    @classmethod
    def build_collator(cls, dataset: IndexedDataset, *, seq_length: int, seed: int, model_config: Any = None):
        require_decoder(cls.name, model_config)
        check_targets(cls.name, cls.provides_labels, model_config)
        if "mask_id" not in dataset.options:
            raise DataError(f"{dataset.path}: a t5 dataset of an earlier version (HF-style span corruption); run "
                            "preprocess.py --data_processor t5 again")
        return SentinelCollator(dataset, seq_length, seed)


def sentinel_corruption(
    tokens: np.ndarray, masked: np.ndarray, sentinels: Sequence[int], start_id: int, end_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """(encoder input, decoder sequence ``[CLS] s0 ... sK [SEP]``) of ``tokens`` (L,) with ``masked`` (L,) bool."""
    source: list[int] = []
    decoder = [start_id]
    span = 0
    for pos, token in enumerate(tokens.tolist()):
        if not masked[pos]:
            source.append(token)
            continue
        if pos == 0 or not masked[pos - 1]:  # a new span: one sentinel for all its tokens
            sentinel = sentinels[min(span, len(sentinels) - 1)]
            source.append(sentinel)
            decoder.append(sentinel)
            span += 1
        decoder.append(token)
    decoder += [sentinels[min(span, len(sentinels) - 1)], end_id]
    return np.asarray(source, dtype=np.int64), np.asarray(decoder, dtype=np.int64)


class SentinelCollator(MlmCollator):
    """Masks as ``mlm`` does, then turns the masked runs into sentinels (see the module docstring)."""

    def __init__(self, dataset: IndexedDataset, seq_length: int, seed: int) -> None:
        super().__init__(dataset, seq_length, seed)
        self.sentinels = [int(i) for i in dataset.options["sentinel_ids"]]
        tokenizer = dataset.manifest["tokenizer"]
        self.start_id, self.end_id = int(tokenizer["bos_id"]), int(tokenizer["eos_id"])

    def __call__(self, indices: Sequence[int], epoch: int) -> Any:
        from tencentpretrain.data.loader import Seq2SeqBatch  # the loader imports this package

        pad = self.dataset.pad_id
        sources, decoders = [], []
        for index in indices:
            tokens = np.asarray(self.dataset[int(index)][0], dtype=np.int64)
            flags = np.asarray(self.dataset.flags(int(index)))
            rng = instance_rng(self.seed, SALT_T5, int(index), epoch if self.dynamic else None)
            _, masked = self.mask(tokens, flags, ~np.isin(tokens, self.specials), rng, self.spec, self.pool)
            source, decoder = sentinel_corruption(tokens, masked, self.sentinels, self.start_id, self.end_id)
            sources.append(source)
            decoders.append(decoder)
        width = max(len(d) for d in decoders)
        src = np.full((len(indices), self.seq_length), pad, dtype=np.int64)  # (B, T)
        tgt_in = np.full((len(indices), width), pad, dtype=np.int64)  # (B, T'): the longest target of the batch
        seg, tgt_seg = np.zeros_like(src), np.zeros_like(tgt_in)
        tgt, loss_mask = tgt_in.copy(), np.zeros_like(tgt_in, dtype=bool)
        for b, (source, decoder) in enumerate(zip(sources, decoders)):
            src[b, : len(source)], seg[b, : len(source)] = source, 1
            n = len(decoder)
            tgt_in[b, :n], tgt_seg[b, :n] = decoder, 1
            tgt[b, : n - 1], loss_mask[b, : n - 1] = decoder[1:], True
        tensors = [torch.from_numpy(a) for a in (src, tgt, seg, loss_mask, tgt_in, tgt_seg)]
        return Seq2SeqBatch(*tensors)
