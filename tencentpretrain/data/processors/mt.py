"""``mt``: a parallel corpus for encoder-decoder training (the original's Transformer MT), one ``source<TAB>target``
pair per line.

The source becomes ``[CLS] source [SEP]`` cut to ``seq_length`` tokens; the target, tokenized by the target-side
tokenizer (``--tgt_tokenizer --tgt_vocab_path --tgt_spm_model_path --tgt_merges_path --tgt_do_lower_case``, built
as the source one is; without any ``--tgt_*`` file the source tokenizer is used, a joint vocabulary), becomes
``[CLS] target [SEP]`` cut to ``tgt_seq_length + 1`` tokens, so the decoder reads and predicts ``tgt_seq_length``.
A line that is not exactly two tab-separated fields is an error (the original skipped it silently; it is counted
and skipped under ``--skip_bad_lines``), a blank line is skipped. Storage and batches: ``seq2seq``.
The manifest records the target tokenizer (``options.tgt_tokenizer``, None when it is the source's); pretrain.py
then builds the decoder's embedding and the targets with its vocabulary size, as the original did.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import token_dtype
from tencentpretrain.data.processors.base import BadLine, Instance, Processor, SkipSample, check_targets
from tencentpretrain.data.processors.seq2seq import PairCollator, pair_instance, require_decoder
from tencentpretrain.errors import ConfigError, TokenizerError
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.tokenizers.base import Tokenizer, TokenizerConfig, build_tokenizer

TARGET_FILE_FLAGS = ("tgt_vocab_path", "tgt_spm_model_path", "tgt_merges_path")


def target_tokenizer_config(config: Any) -> TokenizerConfig | None:
    """The TokenizerConfig the ``--tgt_*`` flags of ``config`` (a DataConfig, or pretrain.py's DataOptions)
    describe, or None when they name no file (use the source's)."""
    if not any(getattr(config, name) for name in TARGET_FILE_FLAGS):
        return None
    fields = {f.name for f in dataclasses.fields(TokenizerConfig)}
    values = {"tokenizer": config.tgt_tokenizer, "vocab_path": config.tgt_vocab_path,
              "spm_model_path": config.tgt_spm_model_path, "merges_path": config.tgt_merges_path,
              "do_lower_case": config.tgt_do_lower_case == "true"}
    unsupported = [k for k, v in values.items() if k not in fields and v]
    if unsupported:
        raise ConfigError(f"--tgt_{unsupported[0]}: the tokenizers of this version take no {unsupported[0]}")
    return TokenizerConfig(**{k: v for k, v in values.items() if k in fields})


@DATA_PROCESSORS.register("mt")
class MtProcessor(Processor):
    """``source<TAB>target`` lines -> (``[CLS] source [SEP]``, ``[CLS] target [SEP]``) pairs."""

    name = "mt"
    uses_mask = False
    cuts_instances = False
    has_token_flags = True

    def __init__(self, tokenizer: Tokenizer, config: DataConfig) -> None:
        super().__init__(tokenizer, config)
        tgt_config = target_tokenizer_config(config)
        self.tgt_tokenizer = tokenizer if tgt_config is None else build_tokenizer(tgt_config)
        self.cls_id = self.require_special("bos_id", "[CLS] (beginning-of-sequence)")
        self.sep_id = self.require_special("eos_id", "[SEP] (end-of-sequence)")
        self.tgt_cls_id, self.tgt_sep_id = self.tgt_tokenizer.bos_id, self.tgt_tokenizer.eos_id
        if self.tgt_cls_id is None or self.tgt_sep_id is None:
            raise TokenizerError(f"data processor 'mt' needs [CLS] and [SEP] (or <s> and </s>) in the target "
                                 f"tokenizer {self.tgt_tokenizer.name!r}")

    def options(self) -> dict[str, Any]:
        same = self.tgt_tokenizer is self.tokenizer
        return {"seq_length": self.config.seq_length, "tgt_seq_length": self.config.tgt_seq_length,
                "tgt_width": self.config.tgt_seq_length,
                "tgt_tokenizer": None if same else self.tgt_tokenizer.describe()}

    def payload_dtype(self) -> np.dtype:
        return token_dtype(max(self.tokenizer.vocab_size, self.tgt_tokenizer.vocab_size))

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        if not line.strip():
            raise SkipSample("empty_line")
        fields = line.strip().split("\t")
        if len(fields) != 2:
            raise BadLine("bad_fields", f"expected source<TAB>target, got {len(fields)} tab-separated fields")
        source = [self.cls_id, *self.tokenizer.encode(fields[0]), self.sep_id][: self.config.seq_length]
        target = [self.tgt_cls_id, *self.tgt_tokenizer.encode(fields[1]), self.tgt_sep_id]
        return [pair_instance(source, target[: self.config.tgt_seq_length + 1])]

    @classmethod
    def build_collator(cls, dataset: Any, *, seq_length: int, seed: int, model_config: Any = None) -> Any:
        require_decoder(cls.name, model_config)
        check_targets(cls.name, cls.provides_labels, model_config)
        return PairCollator(dataset, seq_length, seed)

