"""``prefixlm``: prefix language modelling (UniLM-style, with ``mask: causal_with_prefix``), one
``source<TAB>target`` pair per line.

A line becomes ``[CLS] source [SEP] target [SEP]`` cut to ``seq_length`` tokens; a line whose
``[CLS] source [SEP]`` alone fills ``seq_length`` is skipped (counted as ``prompt_too_long``), as in the original.
Batches (the original's layout): ``src`` the whole sequence (B, T); ``seg`` 1 for ``[CLS] source [SEP]``, 2 for the
target, 0 for padding (the ``causal_with_prefix`` mask lets every token see segment 1); ``tgt`` the next token at
each position; ``loss_mask`` the positions from the source's ``[SEP]`` to the token before the last, so each
target token (its ``[SEP]`` included) is scored once. The original also scored the prefix positions against
label 0 and the last token against ``[PAD]`` unless ``--prefix_lm_loss`` was given; ``--prefix_lm_loss`` keeps
only the positions with ``seg == 2`` here too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import FLAG_SEGMENT_B, IndexedDataset
from tencentpretrain.data.processors.base import BadLine, Instance, Processor, SkipSample, check_targets
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.tokenizers.base import Tokenizer


@DATA_PROCESSORS.register("prefixlm")
class PrefixLmProcessor(Processor):
    """``source<TAB>target`` lines -> ``[CLS] source [SEP] target [SEP]`` with the target tokens flagged."""

    name = "prefixlm"
    uses_mask = False
    cuts_instances = False
    has_token_flags = True

    def __init__(self, tokenizer: Tokenizer, config: DataConfig) -> None:
        super().__init__(tokenizer, config)
        self.max_tokens = config.seq_length
        self.cls_id = self.require_special("bos_id", "[CLS] (beginning-of-sequence)")
        self.sep_id = self.require_special("eos_id", "[SEP] (end-of-sequence)")

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        if not line.strip():
            raise SkipSample("empty_line")
        fields = line.strip().split("\t")
        if len(fields) != 2:
            raise BadLine("bad_fields", f"expected source<TAB>target, got {len(fields)} tab-separated fields")
        source = [self.cls_id, *self.tokenizer.encode(fields[0]), self.sep_id]
        if len(source) >= self.config.seq_length:
            raise SkipSample("prompt_too_long")
        target = [*self.tokenizer.encode(fields[1]), self.sep_id]
        ids = np.asarray(source + target, dtype=np.int64)[: self.config.seq_length]
        flags = np.zeros(len(ids), dtype=np.uint8)
        flags[len(source) :] = FLAG_SEGMENT_B
        return [Instance(ids, None, flags)]

    @classmethod
    def build_collator(cls, dataset: IndexedDataset, *, seq_length: int, seed: int, model_config: Any = None):
        check_targets(cls.name, cls.provides_labels, model_config)
        return PrefixLmCollator(dataset, seq_length)


class PrefixLmCollator:
    """Stored prefix-LM sequences -> Batch (see the module docstring)."""

    def __init__(self, dataset: IndexedDataset, seq_length: int) -> None:
        self.dataset, self.seq_length = dataset, seq_length

    def __call__(self, indices: Sequence[int], epoch: int) -> Any:
        from tencentpretrain.data.loader import Batch  # the loader imports this package

        rows = len(indices)
        src = np.full((rows, self.seq_length), self.dataset.pad_id, dtype=np.int64)  # (B, T)
        tgt, seg = src.copy(), np.zeros_like(src)
        loss_mask = np.zeros((rows, self.seq_length), dtype=bool)
        for b, index in enumerate(indices):
            ids = np.asarray(self.dataset[int(index)][0], dtype=np.int64)
            flags = np.asarray(self.dataset.flags(int(index)))
            n, prefix = len(ids), int(np.argmax(flags & FLAG_SEGMENT_B)) if flags.any() else len(ids)
            src[b, :n], tgt[b, : n - 1] = ids, ids[1:]
            seg[b, :prefix], seg[b, prefix:n] = 1, 2
            loss_mask[b, prefix - 1 : n - 1] = True
        return Batch(torch.from_numpy(src), torch.from_numpy(tgt), torch.from_numpy(seg), torch.from_numpy(loss_mask))
