"""GPT-2's byte-level BPE (``--tokenizer bpe --vocab_path vocab --merges_path merges.txt``).

Text is split into words by GPT-2's pattern, each word's UTF-8 bytes are mapped to printable characters (so every
byte has a symbol and nothing is ever unknown), and the merges are applied lowest rank first. The vocabulary is
either HF's ``vocab.json`` (token -> id) or the original's text form, one token per line, id = line number
(``models/huggingface_gpt2_vocab.txt``). ``merges.txt`` has a ``#version`` header line, then one ``a b`` pair
per line in rank order.

Special ids come from the vocabulary: bos/eos/pad/unk are ``<s>``/``</s>``/``<pad>``/``<unk>`` when present,
else ``<|endoftext|>`` (GPT-2's single special token) for bos, eos and unk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

import regex

from tencentpretrain.errors import TokenizerError
from tencentpretrain.registry import TOKENIZERS
from tencentpretrain.tokenizers.base import Tokenizer, TokenizerConfig, require_file
from tencentpretrain.tokenizers.vocab import SPECIAL_NAMES, load_vocab

GPT2_SPECIAL = "<|endoftext|>"
# GPT-2's pre-tokenizer: English contractions, letter runs, digit runs, other symbols, each with an optional
# leading space; whitespace not followed by a word stays separate.
GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


@lru_cache(maxsize=1)
def byte_to_symbol() -> dict[int, str]:
    """GPT-2's reversible byte -> character table: printable Latin-1 bytes map to themselves, the other 68
    (controls, space, 0x7F-0xA0, 0xAD) to the characters 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def load_bpe_vocab(path: str) -> list[str]:
    """Tokens indexed by id, from HF's ``vocab.json`` or a one-token-per-line file."""
    with open(path, encoding="utf-8") as f:
        head = f.read(1)
    if head != "{":
        return load_vocab(path)
    try:
        with open(path, encoding="utf-8") as f:
            token_to_id: dict[str, int] = json.load(f)
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path}: not a JSON vocabulary ({e.msg} at line {e.lineno})") from None
    ids = sorted(token_to_id.values())
    if ids != list(range(len(ids))):
        raise TokenizerError(f"{path}: the ids of a JSON vocabulary must be 0..{len(ids) - 1} without gaps")
    tokens = [""] * len(ids)
    for token, token_id in token_to_id.items():
        tokens[token_id] = token
    return tokens


def load_merges(path: str) -> dict[tuple[str, str], int]:
    """Merge rank of each symbol pair of a GPT-2 ``merges.txt`` (a ``#version`` header line is skipped)."""
    ranks: dict[tuple[str, str], int] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line or (number == 1 and line.startswith("#version")):
                continue
            pair = line.split(" ")
            if len(pair) != 2:
                raise TokenizerError(f"{path}:{number}: a merge is two symbols separated by one space, got {line!r}")
            ranks.setdefault((pair[0], pair[1]), len(ranks))
    return ranks


def apply_merges(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """The BPE symbols of ``word`` (already byte-mapped): repeatedly merge the adjacent pair of lowest rank."""
    symbols = list(word)
    while len(symbols) > 1:
        pairs = set(pairwise(symbols))
        best = min(pairs, key=lambda pair: ranks.get(pair, len(ranks)))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


@TOKENIZERS.register("bpe")
class BPETokenizer(Tokenizer):
    """GPT-2 byte-level BPE over a vocabulary and a merges file."""

    name = "bpe"

    def __init__(self, vocab_path: str, merges_path: str) -> None:
        self.vocab_path = require_file(vocab_path, "--vocab_path", "BPE vocabulary (vocab.json)")
        self.merges_path = require_file(merges_path, "--merges_path", "BPE merges file (merges.txt)")
        self.tokens = load_bpe_vocab(self.vocab_path)
        self.token_to_id: dict[str, int] = {}
        for i, token in enumerate(self.tokens):
            self.token_to_id.setdefault(token, i)
        self.ranks = load_merges(self.merges_path)
        gpt2_special = self.token_to_id.get(GPT2_SPECIAL)
        for attr, names in SPECIAL_NAMES.items():
            found = [self.token_to_id[n] for n in names if n in self.token_to_id]
            fallback = gpt2_special if attr != "pad_id" else None
            setattr(self, attr, found[0] if found else fallback)
        self._specials = {i for i in (self.bos_id, self.eos_id, self.pad_id) if i is not None}
        self._byte_of = {symbol: b for b, symbol in byte_to_symbol().items()}
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> BPETokenizer:
        return cls(config.vocab_path, config.merges_path)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def files(self) -> tuple[str, ...]:
        return (self.vocab_path, self.merges_path)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in GPT2_PATTERN.findall(text):
            ids.extend(self._word_ids(word))
        return ids

    def _word_ids(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is None:
            table = byte_to_symbol()
            mapped = "".join(table[b] for b in word.encode("utf-8"))
            cached = [self.piece_to_id(symbol) for symbol in apply_merges(mapped, self.ranks)]
            if len(self._cache) < 100_000:
                self._cache[word] = cached
        return cached

    def decode(self, ids: Sequence[int]) -> str:
        symbols = "".join(self.tokens[int(i)] for i in ids if int(i) not in self._specials)
        raw = bytes(self._byte_of[c] for c in symbols if c in self._byte_of)
        return raw.decode("utf-8", errors="replace")

    def id_to_piece(self, token_id: int) -> str:
        return self.tokens[int(token_id)]

    def piece_to_id(self, piece: str) -> int:
        token_id = self.token_to_id.get(piece, self.unk_id)
        if token_id is None:
            raise TokenizerError(f"{self.vocab_path}: {piece!r} is not in the vocabulary, which has no unk token")
        return token_id
