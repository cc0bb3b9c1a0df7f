"""``bilm``: bidirectional language-model data (ELMo-style, for the ``bilm`` target), one document per line.

Each document's tokens (no special tokens added) are cut into instances of ``seq_length`` tokens (the last one
shorter), as in the original. At batch time each position gets two labels: the next token (``[SEP]`` after the
last) and the previous one (``[CLS]`` before the first). Batches: ``src`` (B, T), ``tgt`` (B, T, 2) [next,
previous], ``seg`` 1 for tokens and 0 for padding, ``loss_mask`` = ``seg > 0``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import IndexedDataset
from tencentpretrain.data.processors.base import Instance, Processor, SkipSample, check_targets
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.targets.output import LABELS_BIDIRECTIONAL_TOKENS
from tencentpretrain.tokenizers.base import Tokenizer


@DATA_PROCESSORS.register("bilm")
class BilmProcessor(Processor):
    """Plain text, one document per line -> chunks of ``seq_length`` tokens."""

    name = "bilm"
    uses_mask = False
    cuts_instances = False
    provides_labels = (LABELS_BIDIRECTIONAL_TOKENS,)

    def __init__(self, tokenizer: Tokenizer, config: DataConfig) -> None:
        super().__init__(tokenizer, config)
        self.max_tokens = config.seq_length
        self.cls_id = self.require_special("bos_id", "[CLS] (beginning-of-sequence)")
        self.sep_id = self.require_special("eos_id", "[SEP] (end-of-sequence)")

    def options(self) -> dict[str, Any]:
        return {"seq_length": self.config.seq_length, "cls_id": self.cls_id, "sep_id": self.sep_id}

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        ids = self.tokenizer.encode_array(line.strip())
        if len(ids) == 0:
            raise SkipSample("empty_line")
        return [Instance(ids[s : s + self.max_tokens], None) for s in range(0, len(ids), self.max_tokens)]

    @classmethod
    def build_collator(cls, dataset: IndexedDataset, *, seq_length: int, seed: int, model_config: Any = None):
        check_targets(cls.name, cls.provides_labels, model_config)
        return BilmCollator(dataset, seq_length)


class BilmCollator:
    """Batch(src (B, T), tgt (B, T, 2) next and previous tokens, seg (B, T), loss_mask (B, T))."""

    def __init__(self, dataset: IndexedDataset, seq_length: int) -> None:
        self.dataset, self.seq_length = dataset, seq_length
        self.cls_id, self.sep_id = int(dataset.options["cls_id"]), int(dataset.options["sep_id"])

    def __call__(self, indices: Sequence[int], epoch: int) -> Any:
        from tencentpretrain.data.loader import Batch  # the loader imports this package

        rows, pad = len(indices), self.dataset.pad_id
        src = np.full((rows, self.seq_length), pad, dtype=np.int64)  # (B, T)
        tgt = np.full((rows, self.seq_length, 2), pad, dtype=np.int64)  # (B, T, 2)
        seg = np.zeros_like(src)
        for b, index in enumerate(indices):
            ids = np.asarray(self.dataset[int(index)][0], dtype=np.int64)
            n = len(ids)
            src[b, :n], seg[b, :n] = ids, 1
            tgt[b, :n, 0] = np.concatenate((ids[1:], [self.sep_id]))
            tgt[b, :n, 1] = np.concatenate(([self.cls_id], ids[:-1]))
        return Batch(torch.from_numpy(src), torch.from_numpy(tgt), torch.from_numpy(seg), torch.from_numpy(seg > 0))
