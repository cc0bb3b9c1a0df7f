"""``mlm``: masked language-model data (RoBERTa-style: no sentence pairs), with static or dynamic masking and
optional whole-word masking.

One document per line. Each stripped document becomes ``[CLS] ids [SEP]``, cut into instances of at most
``seq_length`` tokens (only the first starts with [CLS], as in the original). The stored instances are not
masked: the collator masks them at batch time (``tencentpretrain.data.masking``), the same way every epoch unless
``--dynamic_masking``; ``--dup_factor`` stores that many copies, each masked differently (1 with dynamic masking).
With ``--full_sentences`` the documents are packed back to back and cut into instances of ``seq_length`` tokens
after every line was read (the original's layout: ``--dup_factor`` copies of the whole packed corpus).
Batches: ``src`` masked ids, ``tgt`` the original ids, ``seg`` 1 / 0 (padding), ``loss_mask`` the masked positions
(the ``mlm`` target scores those).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import FLAG_WORD_START, IndexedDataset
from tencentpretrain.data.masking import (
    MASK_TOKEN_NAMES,
    SALT_MLM,
    MaskingSpec,
    WordEncoder,
    find_piece,
    instance_rng,
    masker,
)
from tencentpretrain.data.processors.base import Instance, Processor, SkipSample, check_targets
from tencentpretrain.errors import TokenizerError
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.targets.output import LABELS_MASKED_TOKENS
from tencentpretrain.tokenizers.base import Tokenizer


class MaskedLmProcessor(Processor):
    """What ``mlm`` and ``bert`` share: [CLS]/[SEP]/[MASK] ids, word flags, the masking options."""

    uses_mask = False
    cuts_instances = False
    has_token_flags = True

    def __init__(self, tokenizer: Tokenizer, config: DataConfig) -> None:
        super().__init__(tokenizer, config)
        self.max_tokens = config.seq_length  # no shift: an instance fills at most one row of the batch
        self.cls_id = self.require_special("bos_id", "[CLS] (beginning-of-sequence)")
        self.sep_id = self.require_special("eos_id", "[SEP] (end-of-sequence)")
        self.mask_id = self.find_mask_id(tokenizer)
        self.words = WordEncoder(tokenizer, config.whole_word_masking, config.seed)
        self.copies = 1 if config.dynamic_masking else config.dup_factor

    def find_mask_id(self, tokenizer: Tokenizer) -> int:
        """The id masked tokens become; a TokenizerError when the vocabulary has no mask token."""
        mask_id = find_piece(tokenizer, MASK_TOKEN_NAMES)
        if mask_id is None:
            raise TokenizerError(
                f"data processor {self.name!r} needs a mask token ({' or '.join(MASK_TOKEN_NAMES)}) in the "
                f"vocabulary of tokenizer {tokenizer.name!r}"
            )
        return mask_id

    def options(self) -> dict[str, Any]:
        specials = sorted({i for i in (self.cls_id, self.sep_id, self.tokenizer.pad_id, self.tokenizer.unk_id,
                                       self.mask_id) if i is not None})
        return {
            "seq_length": self.config.seq_length,
            "dup_factor": self.copies,
            "dynamic_masking": self.config.dynamic_masking,
            "whole_word_masking": self.config.whole_word_masking,
            "span_masking": ({"geo_prob": self.config.span_geo_prob, "max_length": self.config.span_max_length}
                             if self.config.span_masking else None),
            "word_segmenter": self.words.segmenter_name,
            "mask_id": self.mask_id,
            "special_ids": specials,
        }


def masking_spec(dataset: IndexedDataset) -> MaskingSpec:
    options = dataset.options
    return MaskingSpec(int(options["mask_id"]), int(dataset.manifest["tokenizer"]["vocab_size"]),
                       tuple(int(i) for i in options["special_ids"]))


@DATA_PROCESSORS.register("mlm")
class MlmProcessor(MaskedLmProcessor):
    """Plain text, one document per line -> unmasked instances with word flags; masked at batch time."""

    name = "mlm"
    provides_labels = (LABELS_MASKED_TOKENS,)

    @property
    def packs_stream(self) -> bool:
        return self.config.full_sentences

    @property
    def stream_copies(self) -> int:
        return self.copies

    def options(self) -> dict[str, Any]:
        return {**super().options(), "full_sentences": self.config.full_sentences}

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        text = line.strip()
        if not text:
            raise SkipSample("empty_line")
        body, body_flags = self.words.encode(text)
        ids = np.concatenate(([self.cls_id], body, [self.sep_id]))  # (L + 2,)
        flags = np.concatenate(([FLAG_WORD_START], body_flags, [FLAG_WORD_START])).astype(np.uint8)
        if self.packs_stream:  # the builder packs documents back to back and makes the copies
            return [Instance(ids, None, flags)]
        chunks = []
        for start in range(0, len(ids), self.max_tokens):
            piece = ids[start : start + self.max_tokens]
            if np.isin(piece, (self.cls_id, self.sep_id), invert=True).any():  # something to mask
                chunks.append(Instance(piece, None, flags[start : start + self.max_tokens]))
            else:
                stats["skipped:empty_loss"] += 1
        return chunks * self.copies

    @classmethod
    def build_collator(cls, dataset: IndexedDataset, *, seq_length: int, seed: int, model_config: Any = None):
        check_targets(cls.name, cls.provides_labels, model_config)
        return MlmCollator(dataset, seq_length, seed)


class MlmCollator:
    """Masks instances at batch time: Batch(src masked (B, T), tgt original (B, T), seg (B, T), loss_mask)."""

    def __init__(self, dataset: IndexedDataset, seq_length: int, seed: int) -> None:
        self.dataset, self.seq_length, self.seed = dataset, seq_length, seed
        self.spec = masking_spec(dataset)
        self.pool = self.spec.random_pool()
        self.dynamic = bool(dataset.options["dynamic_masking"])
        self.specials = np.asarray(self.spec.special_ids)
        self.mask = masker(dataset.options)

    def __call__(self, indices: Sequence[int], epoch: int) -> Any:
        from tencentpretrain.data.loader import Batch  # the loader imports this package

        rows = len(indices)
        src = np.full((rows, self.seq_length), self.dataset.pad_id, dtype=np.int64)  # (B, T)
        tgt = src.copy()
        seg = np.zeros((rows, self.seq_length), dtype=np.int64)
        loss_mask = np.zeros((rows, self.seq_length), dtype=bool)
        for b, index in enumerate(indices):
            tokens = np.asarray(self.dataset[int(index)][0], dtype=np.int64)
            flags = np.asarray(self.dataset.flags(int(index)))
            rng = instance_rng(self.seed, SALT_MLM, int(index), epoch if self.dynamic else None)
            candidates = ~np.isin(tokens, self.specials)
            masked, scored = self.mask(tokens, flags, candidates, rng, self.spec, self.pool)
            n = len(tokens)
            src[b, :n], tgt[b, :n], seg[b, :n], loss_mask[b, :n] = masked, tokens, 1, scored
        return Batch(torch.from_numpy(src), torch.from_numpy(tgt), torch.from_numpy(seg), torch.from_numpy(loss_mask))
