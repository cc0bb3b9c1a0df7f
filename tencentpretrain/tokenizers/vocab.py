"""A vocabulary file (one token per line) and the tokenizers built on it: ``char`` and ``space``.

The id of a token is its line number (0-based); only the first whitespace-separated field of a line counts, as
in the original. Special tokens are found by name: bos = ``<s>`` or ``[CLS]``, eos = ``</s>`` or ``[SEP]``,
pad = ``<pad>`` or ``[PAD]``, unk = ``<unk>`` or ``[UNK]`` (None when absent).
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.errors import TokenizerError
from tencentpretrain.registry import TOKENIZERS
from tencentpretrain.tokenizers.base import Tokenizer, TokenizerConfig, require_file

SPECIAL_NAMES: dict[str, tuple[str, ...]] = {
    "bos_id": ("<s>", "[CLS]"),
    "eos_id": ("</s>", "[SEP]"),
    "pad_id": ("<pad>", "[PAD]"),
    "unk_id": ("<unk>", "[UNK]"),
}


def load_vocab(path: str) -> list[str]:
    """Tokens of a vocabulary file, indexed by line."""
    tokens = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            tokens.append(line.split()[0] if line.strip() else line)
    if not tokens:
        raise TokenizerError(f"{path}: empty vocabulary file")
    return tokens


class VocabTokenizer(Tokenizer):
    """Base of tokenizers that look tokens up in a vocabulary file."""

    def __init__(self, vocab_path: str) -> None:
        self.vocab_path = require_file(vocab_path, "--vocab_path", "vocabulary file")
        self.tokens = load_vocab(self.vocab_path)
        self.token_to_id: dict[str, int] = {}
        for i, token in enumerate(self.tokens):
            self.token_to_id.setdefault(token, i)
        for attr, names in SPECIAL_NAMES.items():
            found = [self.token_to_id[n] for n in names if n in self.token_to_id]
            setattr(self, attr, found[0] if found else None)
        self._specials = {i for i in (self.bos_id, self.eos_id, self.pad_id) if i is not None}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def files(self) -> tuple[str, ...]:
        return (self.vocab_path,)

    def id_to_piece(self, token_id: int) -> str:
        return self.tokens[int(token_id)]

    def piece_to_id(self, piece: str) -> int:
        token_id = self.token_to_id.get(piece, self.unk_id)
        if token_id is None:
            raise TokenizerError(f"{self.vocab_path}: {piece!r} is not in the vocabulary, which has no unk token")
        return token_id

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """Pieces of ``ids`` without the bos/eos/pad tokens."""
        return [self.tokens[int(i)] for i in ids if int(i) not in self._specials]


@TOKENIZERS.register("char")
class CharTokenizer(VocabTokenizer):
    """One token per character of the stripped text (unknown characters map to unk)."""

    name = "char"

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> CharTokenizer:
        return cls(config.vocab_path)

    def encode(self, text: str) -> list[int]:
        return [self.piece_to_id(c) for c in text.strip()]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.pieces(ids))


@TOKENIZERS.register("space")
class SpaceTokenizer(VocabTokenizer):
    """One token per space-separated field of the stripped text."""

    name = "space"

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> SpaceTokenizer:
        return cls(config.vocab_path)

    def encode(self, text: str) -> list[int]:
        text = text.strip()
        return [self.piece_to_id(w) for w in text.split(" ")] if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.pieces(ids))
