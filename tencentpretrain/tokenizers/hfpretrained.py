"""Any tokenizer saved by HF ``transformers`` (``--tokenizer hfpretrained --vocab_path <directory>``).

The directory is read with ``transformers.AutoTokenizer`` and nothing is fetched from a hub: the path must be a
local directory (``tokenizer.json``, ``vocab.txt``, ``merges.txt``, ``*.model`` ... plus ``tokenizer_config.json``).
``encode`` adds no special tokens and ``decode`` skips them, as for every tokenizer here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tencentpretrain.errors import TokenizerError
from tencentpretrain.registry import TOKENIZERS
from tencentpretrain.tokenizers.base import Tokenizer, TokenizerConfig

# Files of a saved HF tokenizer that define it (hashed into a dataset's manifest when present).
DEFINING_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
)


def _load_auto_tokenizer(directory: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise TokenizerError("--tokenizer hfpretrained needs the transformers package: pip install transformers "
                             "(or this project's hf extra)") from None
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise TokenizerError(f"{directory}: not a saved HF tokenizer ({str(e).splitlines()[0]})") from None


@TOKENIZERS.register("hfpretrained")
class HFPretrainedTokenizer(Tokenizer):
    """A local HF tokenizer directory, through ``AutoTokenizer``."""

    name = "hfpretrained"

    def __init__(self, directory: str | None) -> None:
        if not directory:
            raise TokenizerError("--tokenizer hfpretrained needs --vocab_path: the directory of a saved HF tokenizer")
        if not os.path.isdir(directory):
            raise TokenizerError(f"{directory}: --tokenizer hfpretrained needs --vocab_path to be a local directory "
                                 "holding a saved HF tokenizer (tokenizer.save_pretrained(dir))")
        self.directory = directory
        self._tok = _load_auto_tokenizer(directory)
        self.bos_id = self._tok.bos_token_id
        self.eos_id = self._tok.eos_token_id
        self.pad_id = self._tok.pad_token_id
        self.unk_id = self._tok.unk_token_id
        self._vocab = self._tok.get_vocab()

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> HFPretrainedTokenizer:
        return cls(config.vocab_path)

    @property
    def vocab_size(self) -> int:
        return len(self._tok)  # added tokens included

    @property
    def files(self) -> tuple[str, ...]:
        paths = (os.path.join(self.directory, name) for name in DEFINING_FILES)
        return tuple(p for p in paths if os.path.isfile(p))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def id_to_piece(self, token_id: int) -> str:
        return self._tok.convert_ids_to_tokens(int(token_id))

    def piece_to_id(self, piece: str) -> int:
        token_id = self._vocab.get(piece)
        if token_id is None:
            if self.unk_id is None:
                raise TokenizerError(f"{self.directory}: {piece!r} is not in the vocabulary, which has no unk token")
            return self.unk_id
        return token_id
