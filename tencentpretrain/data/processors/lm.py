"""``lm``: causal language-model pre-training data (LLaMA continued pre-training).

One document per line (or a JSON line ``{"text": ...}`` with ``--json_format_corpus``; ``llm_pretrain`` always
reads JSON). Each stripped document becomes ``<s> ids </s>``. By default each document is cut into instances of
``seq_length + 1`` tokens (the last one shorter); with ``--full_sentences`` documents are packed back to back and
cut only after every line was read, so instances cross document boundaries. Blank lines are skipped and counted
(the original turned them into ``<s></s>`` samples).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.processors.base import Instance, Processor, SkipSample, parse_json_object, string_field
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.tokenizers.base import Tokenizer


@DATA_PROCESSORS.register("lm")
class LmProcessor(Processor):
    """Plain text (or ``{"text"}`` JSON lines) -> chunks of ``<s> document </s>``; every token is scored."""

    name = "lm"
    uses_mask = False
    always_json = False

    def __init__(self, tokenizer: Tokenizer, config: DataConfig) -> None:
        super().__init__(tokenizer, config)
        self.bos_id = self.require_special("bos_id", "beginning-of-sequence")
        self.eos_id = self.require_special("eos_id", "end-of-sequence")
        self.reads_json = config.json_format_corpus or self.always_json

    @property
    def packs_stream(self) -> bool:
        return self.config.full_sentences

    def options(self) -> dict[str, Any]:
        return {
            "seq_length": self.config.seq_length,
            "full_sentences": self.config.full_sentences,
            "json_format_corpus": self.reads_json,
        }

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        if self.reads_json:
            if not line.strip():
                raise SkipSample("empty_line")
            line = string_field(parse_json_object(line), "text", required=True)
        text = line.strip()
        if not text:
            raise SkipSample("empty_line")
        body = self.tokenizer.encode_array(text)
        ids = np.empty(len(body) + 2, dtype=body.dtype)  # (L + 2,): <s> body </s>
        ids[0], ids[1:-1], ids[-1] = self.bos_id, body, self.eos_id
        # The builder cuts the document into instances of seq_length + 1 (or packs it with --full_sentences).
        return [Instance(ids, None)]


@DATA_PROCESSORS.register("llm_pretrain")
class LlmPretrainProcessor(LmProcessor):
    """``lm`` reading JSON lines ``{"text": ...}`` (the original's ``llm_pretrain``)."""

    always_json = True
