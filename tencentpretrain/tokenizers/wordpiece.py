"""BERT's tokenizer: a basic pass (cleaning, optional lower-casing, CJK and punctuation splitting) then greedy
longest-match WordPiece against a vocabulary file (``--vocab_path``, e.g. BERT's ``vocab.txt``)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from tencentpretrain.registry import TOKENIZERS
from tencentpretrain.tokenizers.base import TokenizerConfig
from tencentpretrain.tokenizers.vocab import VocabTokenizer

MAX_WORD_CHARS = 100  # longer words become unk, as in BERT


@TOKENIZERS.register("bert")
class BertTokenizer(VocabTokenizer):
    """WordPiece over a vocabulary file; continuation pieces start with ``##``."""

    name = "bert"

    def __init__(self, vocab_path: str, *, do_lower_case: bool = True) -> None:
        super().__init__(vocab_path)
        self.do_lower_case = do_lower_case

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> BertTokenizer:
        return cls(config.vocab_path, do_lower_case=config.do_lower_case)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in basic_tokenize(text, do_lower_case=self.do_lower_case):
            ids.extend(self._wordpiece(word))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.pieces(ids)).replace(" ##", "")

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > MAX_WORD_CHARS:
            return [self.piece_to_id(word)]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.token_to_id:
                    ids.append(self.token_to_id[piece])
                    break
                end -= 1
            if end == start:  # no piece matches: the whole word is unknown
                return [self.piece_to_id(word)]
            start = end
        return ids


def basic_tokenize(text: str, *, do_lower_case: bool) -> list[str]:
    """Split ``text`` into words: whitespace, every CJK character and every punctuation mark separate."""
    words: list[str] = []
    for word in _spaced(text).split():
        if do_lower_case:
            word = _strip_accents(word.lower())
        words.extend(_split_punctuation(word))
    return words


def _spaced(text: str) -> str:
    """Drop control characters, turn whitespace into spaces and surround CJK characters by spaces."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (_is_control(ch) and not ch.isspace()):
            continue
        if _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(" " if ch.isspace() else ch)
    return "".join(out)


def _split_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    current = ""
    for ch in word:
        if _is_punctuation(ch):
            if current:
                pieces.append(current)
            pieces.append(ch)
            current = ""
        else:
            current += ch
    if current:
        pieces.append(current)
    return pieces


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # ASCII symbols such as "$" and "^" count as punctuation, as in BERT.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)
