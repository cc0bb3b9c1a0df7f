"""Masking shared by the masked-LM and span-corruption processors: whole-word units, BERT's 80/10/10 rule, SpanBERT's
spans, and the seeded per-instance random streams that make masking static or dynamic.

Randomness. A collator draws the masks of instance ``i`` from ``instance_rng(seed, salt, i, epoch)``: with static
masking ``epoch`` is None, so an instance is masked the same way in every epoch (the original's masks drawn once
at preprocessing, ``--dup_factor`` stored copies giving different masks); with ``--dynamic_masking`` the epoch
is part of the key, so every epoch draws new masks (RoBERTa). Either way a batch depends only on the seed, the
epoch and the instance indices, not on the rank, the batch size or the batches before it.

Whole words. At preprocessing each token gets FLAG_WORD_START when it begins a masking unit:

- without ``--whole_word_masking`` every token is its own unit;
- WordPiece: a ``##`` piece continues the word before it;
- SentencePiece: a piece without the ``▁`` prefix continues the word before it, except that every piece holding a
  CJK character is its own unit (SentencePiece pieces of Chinese are already word-like, and "▁" only marks
  spaces, which Chinese text has none of);
- Chinese with a tokenizer that splits CJK characters apart (BERT's): each run of CJK characters is segmented
  into words by ``jieba`` when it is installed (``pip install tencentpretrain[chinese]``), otherwise cut into
  random spans of 1 to 3 characters (mean 1.9, close to the mean length of Chinese words), which masks the
  n-grams a segmenter would mostly find, without a dictionary. The manifest records which one was used.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tencentpretrain.data.dataset import FLAG_WORD_START
from tencentpretrain.tokenizers.base import Tokenizer

MASK_PROB = 0.15  # share of maskable tokens that are predicted (BERT)
REPLACE_WITH_MASK = 0.8  # of those: [MASK]; then REPLACE_WITH_RANDOM a random token; the rest stay as they are
REPLACE_WITH_RANDOM = 0.1
NGRAM_LENGTHS = (1, 2, 3)  # fallback Chinese "words" without jieba
NGRAM_PROBS = (0.3, 0.5, 0.2)
MASK_TOKEN_NAMES = ("[MASK]", "<mask>")
SALT_PAIR, SALT_MLM, SALT_T5, SALT_WORDS = 1, 2, 3, 4  # separate random streams


# ---------------------------------------------------------------------------------------------- randomness
def instance_rng(seed: int, salt: int, index: int, epoch: int | None) -> np.random.Generator:
    """The random stream of one instance: fixed across epochs when ``epoch`` is None (static masking)."""
    key = [seed, salt, index] if epoch is None else [seed, salt, index, epoch + 1]
    return np.random.default_rng(key)


def text_rng(seed: int, salt: int, text: str, copy: int = 0) -> np.random.Generator:
    """A random stream keyed by a record's content, so preprocessing does not depend on how lines are split
    among workers."""
    return np.random.default_rng([seed, salt, zlib.crc32(text.encode("utf-8")), copy])


# ---------------------------------------------------------------------------------------------- special ids
def find_piece(tokenizer: Tokenizer, names: Sequence[str]) -> int | None:
    """The id of the first of ``names`` that is in the vocabulary (not mapped to unk), or None."""
    for name in names:
        token_id = _lookup(tokenizer, name)
        if token_id is not None:
            return token_id
    return None


def _lookup(tokenizer: Tokenizer, piece: str) -> int | None:
    try:
        token_id = tokenizer.piece_to_id(piece)
    except Exception:  # noqa: BLE001 - a tokenizer without unk raises for unknown pieces
        return None
    if token_id is None or tokenizer.id_to_piece(token_id) != piece:
        return None
    return int(token_id)


def sentinel_ids(tokenizer: Tokenizer, limit: int = 1000) -> list[int]:
    """T5's sentinel ids in order: ``<extra_id_0>``, ``<extra_id_1>``, ... (HF T5 / SentencePiece) or ``extra0``,
    ``extra1``, ... (the Chinese T5 vocabularies of UER)."""
    for pattern in ("<extra_id_{}>", "extra{}", "[extra_id_{}]"):
        ids = []
        for i in range(limit):
            token_id = _lookup(tokenizer, pattern.format(i))
            if token_id is None:
                break
            ids.append(token_id)
        if ids:
            return ids
    return []


# ---------------------------------------------------------------------------------------------- whole words
def is_cjk_char(ch: str) -> bool:
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def chinese_segmenter() -> tuple[str, Callable[[str, np.random.Generator], list[str]]]:
    """(name, segment) where ``segment(run, rng)`` cuts a run of CJK characters into words: jieba when it is
    installed, else random 1-3 character spans."""
    try:
        import jieba
    except ImportError:
        return "ngram", _ngram_words
    jieba.setLogLevel(60)  # no "Building prefix dict" chatter

    def segment(run: str, rng: np.random.Generator) -> list[str]:
        return [w for w in jieba.lcut(run, HMM=True) if w]

    return f"jieba {getattr(jieba, '__version__', '')}".strip(), segment


def _ngram_words(run: str, rng: np.random.Generator) -> list[str]:
    words, i = [], 0
    while i < len(run):
        n = int(rng.choice(NGRAM_LENGTHS, p=NGRAM_PROBS))
        words.append(run[i : i + n])
        i += n
    return words


@dataclass(frozen=True)
class WordEncoder:
    """Encodes text into token ids plus FLAG_WORD_START flags (see the module docstring)."""

    tokenizer: Tokenizer
    whole_word: bool
    seed: int = 7

    @property
    def segmenter_name(self) -> str | None:
        """What found Chinese words ("jieba 0.42.1", "ngram"), or None when no segmentation is done."""
        if not self.whole_word or self.tokenizer.adds_dummy_prefix:
            return None
        return chinese_segmenter()[0]

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids (L,) int64, flags (L,) uint8) of ``text``; no special tokens are added."""
        if not self.whole_word:
            ids = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
            return ids, np.full(len(ids), FLAG_WORD_START, dtype=np.uint8)
        if self.tokenizer.adds_dummy_prefix:
            return self._encode_sentencepiece(text)
        return self._encode_split(text)

    def _encode_sentencepiece(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = self.tokenizer.encode(text)
        flags = np.zeros(len(ids), dtype=np.uint8)
        previous_cjk = True
        for i, token_id in enumerate(ids):
            piece = self.tokenizer.id_to_piece(token_id)
            cjk = any(is_cjk_char(c) for c in piece)
            if piece.startswith("▁") or cjk or previous_cjk:
                flags[i] = FLAG_WORD_START
            previous_cjk = cjk
        return np.asarray(ids, dtype=np.int64), flags

    def _encode_split(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Tokenizers that split CJK characters apart (BERT's): encoding CJK words and the text between them one by
        one gives the ids of the whole text, and tells where each word starts."""
        _, segment = chinese_segmenter()
        rng = text_rng(self.seed, SALT_WORDS, text)
        ids: list[int] = []
        flags: list[int] = []
        for part, cjk in _cjk_runs(text):
            if cjk:
                for word in segment(part, rng):
                    word_ids = self.tokenizer.encode(word)
                    ids.extend(word_ids)
                    flags.extend([FLAG_WORD_START] + [0] * (len(word_ids) - 1))
                continue
            part_ids = self.tokenizer.encode(part)
            ids.extend(part_ids)
            flags.extend(0 if self.tokenizer.id_to_piece(t).startswith("##") else FLAG_WORD_START for t in part_ids)
        return np.asarray(ids, dtype=np.int64), np.asarray(flags, dtype=np.uint8)


def _cjk_runs(text: str) -> list[tuple[str, bool]]:
    """``text`` cut into maximal runs of CJK and of other characters: [(run, is_cjk), ...]."""
    runs: list[tuple[str, bool]] = []
    for ch in text:
        cjk = is_cjk_char(ch)
        if runs and runs[-1][1] == cjk:
            runs[-1] = (runs[-1][0] + ch, cjk)
        else:
            runs.append((ch, cjk))
    return runs


# ---------------------------------------------------------------------------------------------- BERT masking
@dataclass(frozen=True)
class MaskingSpec:
    """What masking needs to know about the vocabulary."""

    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]  # never masked, never drawn as random replacements

    def random_pool(self) -> np.ndarray:
        """Ids a masked token may be replaced with (every non-special id)."""
        return np.setdiff1d(np.arange(self.vocab_size), np.asarray(self.special_ids + (self.mask_id,)))


def word_units(flags: np.ndarray, candidates: np.ndarray) -> list[np.ndarray]:
    """Positions of the maskable tokens grouped into whole-word units: a unit starts at each candidate with
    FLAG_WORD_START (or after a non-candidate) and takes the continuation tokens after it."""
    units: list[list[int]] = []
    for pos in np.flatnonzero(candidates):
        if not units or (flags[pos] & FLAG_WORD_START) or units[-1][-1] != pos - 1:
            units.append([int(pos)])
        else:
            units[-1].append(int(pos))
    return [np.asarray(u) for u in units]


def mask_tokens(
    tokens: np.ndarray, flags: np.ndarray, candidates: np.ndarray, rng: np.random.Generator, spec: MaskingSpec,
    pool: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of one instance: about MASK_PROB of the candidate tokens, whole units at a time, are
    predicted; of those 80% become [MASK], 10% a random token, 10% stay.

    Returns (masked tokens (L,), loss mask (L,) bool).
    """
    masked = tokens.copy()
    loss_mask = np.zeros(len(tokens), dtype=bool)
    units = word_units(flags, candidates)
    budget = max(1, round(MASK_PROB * int(candidates.sum()))) if units else 0
    chosen = 0
    for u in rng.permutation(len(units)):
        if chosen >= budget:
            break
        unit = units[u]
        if chosen + len(unit) > budget and chosen > 0:
            continue  # a long word that would overshoot; a shorter one may still fit
        loss_mask[unit] = True
        chosen += len(unit)
    positions = np.flatnonzero(loss_mask)
    draw = rng.random(len(positions))
    masked[positions[draw < REPLACE_WITH_MASK]] = spec.mask_id
    randomized = positions[(draw >= REPLACE_WITH_MASK) & (draw < REPLACE_WITH_MASK + REPLACE_WITH_RANDOM)]
    masked[randomized] = rng.choice(pool, size=len(randomized))
    return masked, loss_mask


@dataclass(frozen=True)
class SpanMasking:
    """SpanBERT's span masking (``--span_masking``): spans of whole-word units with a length (in units) drawn from
    a geometric distribution of parameter ``geo_prob``, cut at ``max_length``."""

    geo_prob: float = 0.2
    max_length: int = 10


def mask_spans(
    tokens: np.ndarray, flags: np.ndarray, candidates: np.ndarray, rng: np.random.Generator, spec: MaskingSpec,
    pool: np.ndarray, spans: SpanMasking,
) -> tuple[np.ndarray, np.ndarray]:
    """Span masking of one instance: spans of consecutive whole-word units start at random units until about
    MASK_PROB of the candidate tokens are predicted. The 80/10/10 rule is drawn once per span, so a span is all
    [MASK], all random tokens or all kept, as in SpanBERT.

    Returns (masked tokens (L,), loss mask (L,) bool).
    """
    masked = tokens.copy()
    loss_mask = np.zeros(len(tokens), dtype=bool)
    units = word_units(flags, candidates)
    budget = max(1, round(MASK_PROB * int(candidates.sum()))) if units else 0
    chosen, attempts = 0, 0
    while chosen < budget and attempts < 10 * len(units):
        attempts += 1
        length = min(int(rng.geometric(spans.geo_prob)), spans.max_length, len(units))
        start = int(rng.integers(0, len(units) - length + 1))
        span_units = [u for u in units[start : start + length] if not loss_mask[u].any()]
        if not span_units:
            continue
        span = np.concatenate(span_units)
        if chosen + len(span) > budget and chosen > 0:
            continue  # would overshoot; a shorter span may still fit
        loss_mask[span] = True
        chosen += len(span)
        draw = rng.random()
        if draw < REPLACE_WITH_MASK:
            masked[span] = spec.mask_id
        elif draw < REPLACE_WITH_MASK + REPLACE_WITH_RANDOM:
            masked[span] = rng.choice(pool, size=len(span))
    return masked, loss_mask


def masker(options: dict) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The masking function a dataset's options ask for: ``mask_spans`` with ``span_masking``, else
    ``mask_tokens``; both take (tokens, flags, candidates, rng, spec, pool)."""
    span = options.get("span_masking")
    if not span:
        return mask_tokens
    settings = SpanMasking(float(span["geo_prob"]), int(span["max_length"]))
    return lambda *args: mask_spans(*args, settings)
