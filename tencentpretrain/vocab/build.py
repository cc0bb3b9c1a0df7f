"""Training a SentencePiece model on a corpus: the Chinese half of a vocabulary extension.

``build_vocab(VocabBuildConfig(...))`` trains a model and writes it atomically. The same corpus and options give
the same model bytes: lines are read in file order and fed to the trainer through an iterator (so no input path
is stored in the model), training runs on one thread by default, and any sampling of lines is done here with a
seeded generator instead of SentencePiece's unseeded shuffle.

Lines longer than ``max_sentence_length`` bytes (SentencePiece silently skips those) are cut at sentence ends
(。！？!?；; and newlines), so long Chinese documents, one per line, still count.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import sentencepiece as spm

from tencentpretrain.atomic import write_bytes
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.tokenizers.base import file_sha256

logger = logging.getLogger(__name__)

ModelType = Literal["bpe", "unigram", "char", "word"]
MODEL_TYPES: tuple[str, ...] = ("bpe", "unigram", "char", "word")
# A sentence ends after one of these (kept with the sentence); runs of them stay together ("！？").
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;…])(?![。！？!?；;…”」』）)])")


@dataclass(frozen=True, kw_only=True)
class VocabBuildConfig:
    """What to train. The defaults suit a Chinese model that will be merged into LLaMA's tokenizer."""

    corpus_paths: tuple[str, ...]  # plain text, one document per line (or JSONL with json_format)
    output_model_path: str  # the .model file to write; a .vocab listing is written beside it
    vocab_size: int = 20000
    model_type: ModelType = "bpe"  # LLaMA's tokenizer is BPE: merge a BPE model into it
    character_coverage: float = 0.9995  # share of characters covered by pieces; the rest are bytes or unk
    byte_fallback: bool = True  # unknown characters become <0xNN> pieces instead of <unk>
    split_digits: bool = True  # every digit its own piece, as LLaMA
    user_defined_symbols: tuple[str, ...] = ()  # always one piece wherever they occur in text
    control_symbols: tuple[str, ...] = ()  # reserved ids that never come out of encoding text
    normalization_rule_name: str = "identity"  # LLaMA's; other rules must match the base model's to merge
    add_dummy_prefix: bool = True  # a "▁" before the text, as LLaMA
    remove_extra_whitespaces: bool = False
    max_sentence_length: int = 4192  # bytes; longer lines are cut at sentence ends
    max_sentencepiece_length: int = 16  # characters in one piece
    hard_vocab_limit: bool = True  # False: a corpus too small for vocab_size gives fewer pieces, not an error
    input_sentence_size: int = 0  # train on a seeded sample of this many lines; 0 = all lines
    seed: int = 0
    num_threads: int = 1  # more threads train faster; one thread is the reproducible choice
    json_format: bool = False  # corpus lines are JSON objects whose "text" field is the document
    write_vocab_file: bool = True  # a "<piece>\t<score>" listing next to the model, for reading

    def __post_init__(self) -> None:
        if not self.corpus_paths:
            raise ConfigError("no corpus given: pass --corpus_path FILE [FILE ...]")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type {self.model_type!r} is not one of {', '.join(MODEL_TYPES)}")
        if self.vocab_size <= 0:
            raise ConfigError(f"vocab_size must be positive, got {self.vocab_size}")
        if not 0.0 < self.character_coverage <= 1.0:
            raise ConfigError(f"character_coverage must be in (0, 1], got {self.character_coverage}")
        if self.max_sentence_length < 16:
            raise ConfigError(f"max_sentence_length must be at least 16 bytes, got {self.max_sentence_length}")
        if self.input_sentence_size < 0 or self.num_threads < 1:
            raise ConfigError("input_sentence_size must be >= 0 and num_threads >= 1")
        clash = set(self.user_defined_symbols) & set(self.control_symbols)
        if clash:
            raise ConfigError(f"symbols both user-defined and control: {sorted(clash)}")


@dataclass
class CorpusStats:
    """What reading the corpus did: lines read, lines that were empty, lines cut into several sentences."""

    lines: int = 0
    empty: int = 0
    cut: int = 0
    sentences: int = 0
    chars: int = 0


@dataclass(frozen=True)
class VocabBuildResult:
    """The written model and what went into it."""

    model_path: str
    vocab_path: str | None
    pieces: int
    sha256: str
    stats: CorpusStats = field(default_factory=CorpusStats)


# ---------------------------------------------------------------------- corpus
def split_long_line(line: str, max_bytes: int) -> list[str]:
    """Cut ``line`` into pieces of at most ``max_bytes`` UTF-8 bytes, at sentence ends where possible.

    Consecutive sentences are packed together up to the limit; a single sentence longer than the limit is cut
    at character boundaries.
    """
    if len(line.encode("utf-8")) <= max_bytes:
        return [line]
    chunks: list[str] = []
    current, current_bytes = "", 0
    for sentence in _SENTENCE_END.split(line):
        for part in _cut_by_bytes(sentence, max_bytes):
            size = len(part.encode("utf-8"))
            if current and current_bytes + size > max_bytes:
                chunks.append(current)
                current, current_bytes = "", 0
            current += part
            current_bytes += size
    if current:
        chunks.append(current)
    return chunks


def _cut_by_bytes(text: str, max_bytes: int) -> list[str]:
    parts, current, size = [], [], 0
    for ch in text:
        n = len(ch.encode("utf-8"))
        if current and size + n > max_bytes:
            parts.append("".join(current))
            current, size = [], 0
        current.append(ch)
        size += n
    if current:
        parts.append("".join(current))
    return parts


def read_corpus_lines(paths: Iterable[str], *, json_format: bool = False) -> Iterator[tuple[str, int, str]]:
    """Yield (path, line number, text) for every line of every file, in order; invalid input raises DataError."""
    for path in paths:
        try:
            f = open(path, encoding="utf-8")
        except OSError as e:
            raise DataError(f"{path}: cannot read corpus ({e.strerror})") from None
        with f:
            try:
                for number, raw in enumerate(f, start=1):
                    yield path, number, _line_text(raw, path, number, json_format)
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start} of a block)") from None


def _line_text(raw: str, path: str, number: int, json_format: bool) -> str:
    raw = raw.rstrip("\r\n")
    if not json_format or not raw.strip():
        return raw
    try:
        text = json.loads(raw)["text"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}:{number}: expected a JSON object with a \"text\" field ({e})") from None
    if not isinstance(text, str):
        raise DataError(f"{path}:{number}: \"text\" must be a string")
    return text


def training_sentences(config: VocabBuildConfig, stats: CorpusStats) -> list[str]:
    """The sentences the trainer sees: non-empty lines, long ones cut, optionally a seeded sample."""
    sentences: list[str] = []
    for _, _, text in read_corpus_lines(config.corpus_paths, json_format=config.json_format):
        stats.lines += 1
        if not text.strip():
            stats.empty += 1
            continue
        parts = split_long_line(text, config.max_sentence_length)
        stats.cut += len(parts) > 1
        stats.chars += len(text)
        sentences.extend(parts)
    if not sentences:
        raise DataError(f"{', '.join(config.corpus_paths)}: the corpus has no non-empty lines")
    if 0 < config.input_sentence_size < len(sentences):
        keep = sorted(random.Random(config.seed).sample(range(len(sentences)), config.input_sentence_size))
        sentences = [sentences[i] for i in keep]
    stats.sentences = len(sentences)
    return sentences


# ---------------------------------------------------------------------- training
def trainer_options(config: VocabBuildConfig) -> dict:
    """The SentencePieceTrainer keyword arguments for ``config`` (no input path, no sampling by the trainer)."""
    return dict(
        model_type=config.model_type,
        vocab_size=config.vocab_size,
        character_coverage=config.character_coverage,
        byte_fallback=config.byte_fallback,
        split_digits=config.split_digits,
        user_defined_symbols=list(config.user_defined_symbols),
        control_symbols=list(config.control_symbols),
        normalization_rule_name=config.normalization_rule_name,
        add_dummy_prefix=config.add_dummy_prefix,
        remove_extra_whitespaces=config.remove_extra_whitespaces,
        max_sentence_length=config.max_sentence_length,
        max_sentencepiece_length=config.max_sentencepiece_length,
        hard_vocab_limit=config.hard_vocab_limit,
        num_threads=config.num_threads,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )


def train_sentencepiece(sentences: list[str], config: VocabBuildConfig) -> bytes:
    """Train on ``sentences`` and return the serialized model."""
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=buffer, **trainer_options(config)
        )
    except RuntimeError as e:
        raise ConfigError(f"SentencePiece training failed: {e}") from None
    return buffer.getvalue()


def write_vocab_listing(model: bytes, path: str) -> None:
    """Write ``<piece>\\t<score>`` per id, like SentencePiece's own .vocab file."""
    processor = spm.SentencePieceProcessor(model_proto=model)
    lines = (f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n" for i in range(processor.get_piece_size()))
    write_bytes(path, "".join(lines).encode("utf-8"))


def vocab_listing_path(model_path: str) -> str:
    """``x.model`` -> ``x.vocab``."""
    stem = model_path[: -len(".model")] if model_path.endswith(".model") else model_path
    return stem + ".vocab"


def build_vocab(config: VocabBuildConfig) -> VocabBuildResult:
    """Train a SentencePiece model on the corpus and write it (and its .vocab listing) atomically."""
    stats = CorpusStats()
    sentences = training_sentences(config, stats)
    logger.info(
        "training a %s model of %d pieces on %d sentences (%d lines, %d cut, %d empty)",
        config.model_type, config.vocab_size, stats.sentences, stats.lines, stats.cut, stats.empty,
    )
    model = train_sentencepiece(sentences, config)
    write_bytes(config.output_model_path, model)
    vocab_path = None
    if config.write_vocab_file:
        vocab_path = vocab_listing_path(config.output_model_path)
        write_vocab_listing(model, vocab_path)
    pieces = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
    logger.info("wrote %s (%d pieces)", config.output_model_path, pieces)
    return VocabBuildResult(
        model_path=config.output_model_path,
        vocab_path=vocab_path,
        pieces=pieces,
        sha256=file_sha256(config.output_model_path),
        stats=stats,
    )
