"""``gsg``: Pegasus's gap-sentence generation, as the original builds it.

Corpus: one sentence per line, documents separated by blank lines (the ``bert`` format). Sentences of
``seq_length - 2`` tokens or more, or of ``tgt_seq_length - 2`` or more, are dropped. ``round(0.3 * n)`` of the
``n`` remaining sentences are gaps: the first ones (``--sentence_selection_strategy lead``) or drawn at random
among all but the last (``random``). Walking through the sentences, a gap adds one ``[MASK]`` to the source and
the sentence to the target; another sentence is added to the source. When a sentence does not fit (a source of
``seq_length - 2`` or a target of ``tgt_seq_length - 2`` tokens would be reached) the pair so far is emitted, if
both sides have tokens, and a new one starts with that sentence. Each pair is stored as
``([CLS] source [SEP], [CLS] target [SEP])``; ``--dup_factor`` copies of each document are made (identical with
``lead``; ``random`` draws each copy's gaps anew). Batches: ``seq2seq``, decoder width ``tgt_seq_length - 1``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.masking import MASK_TOKEN_NAMES, find_piece, text_rng
from tencentpretrain.data.processors.base import Instance, Processor, SkipSample, check_targets
from tencentpretrain.data.processors.seq2seq import PairCollator, pair_instance, require_decoder
from tencentpretrain.errors import ConfigError, TokenizerError
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.tokenizers.base import Tokenizer

SALT_GSG = 5
GAP_SENTENCE_RATIO = 0.3


def gap_sentences(count: int, strategy: str, rng: np.random.Generator) -> set[int]:
    """Indices of the gap sentences among ``count`` sentences."""
    gaps = round(count * GAP_SENTENCE_RATIO)  # Python rounds half to even, as the original did
    if strategy == "lead":
        return set(range(gaps))
    return {int(i) for i in rng.choice(max(count - 1, 0), size=gaps, replace=False)}


@DATA_PROCESSORS.register("gsg")
class GsgProcessor(Processor):
    """Documents -> (source with a [MASK] per gap sentence, the gap sentences) pairs."""

    name = "gsg"
    uses_mask = False
    cuts_instances = False
    has_token_flags = True
    reads_documents = True

    def __init__(self, tokenizer: Tokenizer, config: DataConfig) -> None:
        super().__init__(tokenizer, config)
        self.cls_id = self.require_special("bos_id", "[CLS] (beginning-of-sequence)")
        self.sep_id = self.require_special("eos_id", "[SEP] (end-of-sequence)")
        mask_id = find_piece(tokenizer, MASK_TOKEN_NAMES)
        if mask_id is None:
            raise TokenizerError(f"data processor 'gsg' needs a mask token ({' or '.join(MASK_TOKEN_NAMES)}) in the "
                                 f"vocabulary of tokenizer {tokenizer.name!r}")
        self.mask_id = mask_id
        if config.seq_length < 4 or config.tgt_seq_length < 4:
            raise ConfigError("data processor 'gsg' needs --seq_length and --tgt_seq_length of at least 4, got "
                              f"{config.seq_length} and {config.tgt_seq_length}")

    def options(self) -> dict[str, Any]:
        return {"seq_length": self.config.seq_length, "tgt_seq_length": self.config.tgt_seq_length,
                "tgt_width": self.config.tgt_seq_length - 1, "dup_factor": self.config.dup_factor,
                "sentence_selection_strategy": self.config.sentence_selection_strategy}

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        src_room, tgt_room = self.config.seq_length - 2, self.config.tgt_seq_length - 2
        sentences = [self.tokenizer.encode(s) for s in line.splitlines() if s.strip()]
        sentences = [s for s in sentences if s and len(s) < src_room and len(s) < tgt_room]
        if not sentences:
            raise SkipSample("short_document")
        instances = []
        for copy in range(self.config.dup_factor):
            rng = text_rng(self.config.seed, SALT_GSG, line, copy)
            gaps = gap_sentences(len(sentences), self.config.sentence_selection_strategy, rng)
            instances.extend(self._pairs(sentences, gaps, src_room, tgt_room))
        if not instances:
            raise SkipSample("short_document")
        return instances

    def _pairs(self, sentences: list[list[int]], gaps: set[int], src_room: int, tgt_room: int) -> list[Instance]:
        pairs, src, tgt = [], [], []
        for i, sentence in enumerate(sentences):
            if i in gaps and len(tgt) + len(sentence) < tgt_room and len(src) + 1 < src_room:
                src, tgt = src + [self.mask_id], tgt + sentence
            elif i not in gaps and len(src) + len(sentence) < src_room:
                src = src + sentence
            else:
                if src and tgt:
                    pairs.append(self._instance(src, tgt))
                src, tgt = ([self.mask_id], sentence) if i in gaps else (sentence, [])
        if src and tgt:
            pairs.append(self._instance(src, tgt))
        return pairs

    def _instance(self, src: list[int], tgt: list[int]) -> Instance:
        return pair_instance([self.cls_id, *src, self.sep_id], [self.cls_id, *tgt, self.sep_id])

    @classmethod
    def build_collator(cls, dataset: Any, *, seq_length: int, seed: int, model_config: Any = None) -> Any:
        require_decoder(cls.name, model_config)
        check_targets(cls.name, cls.provides_labels, model_config)
        return PairCollator(dataset, seq_length, seed)
