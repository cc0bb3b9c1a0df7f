"""Merging a second SentencePiece model (e.g. a Chinese one) into a base model (e.g. LLaMA's): vocabulary extension.

The merge works on the model protobuf (``sentencepiece_model_pb2``) and keeps these invariants:

* every base piece keeps its id, score and type; special (unk/control), user-defined and byte-fallback pieces
  are never touched, and the base normalizer and trainer settings are kept;
* new pieces are appended after the base pieces, in the order of the extra model;
* by default a new piece must contain a character outside ASCII: a piece with ASCII letters or digits
  (``allow_ascii_alnum``) or made only of ASCII punctuation and spaces (``allow_ascii_symbols``) would change
  how English and code are split. With both left off, text made only of ASCII characters is tokenized exactly
  as before, because no new piece can match inside it;
* serialization is deterministic, so the same inputs give the same bytes.

New pieces of a BPE base get scores below every base score (``score_mode="after_base"``): BPE merges the
highest-scoring pair first, so base merges keep their priority and the extra model's order among its own pieces
is kept. A unigram base keeps the extra model's log-probabilities (``"keep"``).

``merge_tokenizers`` also measures what the merge did (``MergeReport``): pieces added and skipped by reason,
Chinese tokens per character before and after, probe lines (English, code) that tokenize differently, and new
pieces that the merged model can never produce for their own text.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

import sentencepiece as spm

from tencentpretrain.atomic import write_bytes
from tencentpretrain.errors import ConfigError, TokenizerError

if TYPE_CHECKING:
    from sentencepiece.sentencepiece_model_pb2 import ModelProto

logger = logging.getLogger(__name__)

ScoreMode = Literal["auto", "after_base", "keep"]
SKIP_REASONS = ("special", "user_defined", "in_base", "ascii_alnum", "ascii_symbols", "limit")
SPACE = "\u2581"  # SentencePiece's whitespace marker

# Piece types of sentencepiece_model.proto.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# English prose and code that a Chinese extension must not re-split (written for this project).
DEFAULT_PROBE: tuple[str, ...] = (
    "The committee will publish its findings next spring, after a second round of interviews.",
    "She poured the coffee, checked the time, and decided the train could wait five more minutes.",
    "Rivers carry sediment to the sea, building deltas that shift a little every year.",
    "Please rewrite the paragraph above so that a ten-year-old can understand it.",
    "Version 2.3.1 was released on 2024-02-29 with 17 bug fixes and 3 new features.",
    "Costs rose by 12.5% in the third quarter, mostly because of shipping delays.",
    "Don't panic: it's only a warning, and you can't break anything by reading it.",
    "import numpy as np",
    "def train_step(model, batch, optimizer):",
    "    loss = model(batch.src, batch.tgt, batch.seg).loss",
    "    loss.backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)",
    "for (int i = 0; i < n; ++i) { sum += values[i] * weights[i]; }",
    "const result = await fetch(`/api/v1/items?page=${page}`);",
    '{"model": "llama-7b", "max_tokens": 256, "temperature": 0.7, "stop": ["</s>"]}',
    "SELECT name, COUNT(*) AS n FROM orders GROUP BY name HAVING n > 10;",
    "#include <stdio.h>",
    "git log --oneline --graph -- src/tokenizer.py | head -n 20",
    "    return {k: v.to(device) for k, v in state_dict.items() if not k.startswith('_')}",
    "x = torch.randn(2, 3, 4)  # (B, T, H)",
    "https://example.com/docs/getting-started#install",
)


@dataclass(frozen=True, kw_only=True)
class MergeConfig:
    """Which pieces of the extra model are appended, and with which scores."""

    allow_ascii_alnum: bool = False  # also add pieces with ASCII letters or digits (re-splits English and code)
    allow_ascii_symbols: bool = False  # also add pieces of only ASCII punctuation/spaces, e.g. "▁(" (re-splits code)
    include_user_defined: bool = False  # also add the extra model's user-defined pieces (as user-defined)
    score_mode: ScoreMode = "auto"  # "auto": after_base for a BPE base, keep for unigram
    max_new_pieces: int | None = None  # add at most this many (the extra model's first ones)

    def __post_init__(self) -> None:
        if self.score_mode not in ("auto", "after_base", "keep"):
            raise ConfigError(f"score_mode {self.score_mode!r} is not one of auto, after_base, keep")
        if self.max_new_pieces is not None and self.max_new_pieces < 0:
            raise ConfigError(f"max_new_pieces must be >= 0, got {self.max_new_pieces}")


@dataclass(frozen=True)
class ProbeChange:
    """A probe line whose pieces differ between the base and the merged model."""

    line: str
    before: list[str]
    after: list[str]


@dataclass
class MergeReport:
    """What a merge did and how it changes tokenization."""

    base_pieces: int
    extra_pieces: int
    merged_pieces: int
    added: int
    skipped: dict[str, int]
    unreachable: list[str] = field(default_factory=list)  # new pieces the merged model never emits for their text
    zh_lines: int = 0
    zh_chars: int = 0
    zh_tokens_before: int = 0
    zh_tokens_after: int = 0
    probe_lines: int = 0
    probe_changed: list[ProbeChange] = field(default_factory=list)

    @property
    def zh_tokens_per_char_before(self) -> float | None:
        return self.zh_tokens_before / self.zh_chars if self.zh_chars else None

    @property
    def zh_tokens_per_char_after(self) -> float | None:
        return self.zh_tokens_after / self.zh_chars if self.zh_chars else None

    def to_dict(self) -> dict:
        """A JSON-ready dict, ratios included."""
        out = asdict(self)
        out["zh_tokens_per_char_before"] = self.zh_tokens_per_char_before
        out["zh_tokens_per_char_after"] = self.zh_tokens_per_char_after
        return out

    def summary(self) -> list[str]:
        """Human-readable lines for the log."""
        skipped = ", ".join(f"{reason} {n}" for reason, n in self.skipped.items() if n) or "none"
        lines = [
            f"base {self.base_pieces} pieces + {self.added} new = {self.merged_pieces} "
            f"(extra model {self.extra_pieces}; skipped: {skipped})",
        ]
        if self.zh_chars:
            lines.append(
                f"Chinese tokens per character: {self.zh_tokens_per_char_before:.3f} -> "
                f"{self.zh_tokens_per_char_after:.3f} ({self.zh_lines} lines, {self.zh_chars} characters)"
            )
        lines.append(f"probe lines tokenized differently: {len(self.probe_changed)} of {self.probe_lines}")
        lines += [f"  changed: {c.line!r}: {c.before} -> {c.after}" for c in self.probe_changed]
        if self.unreachable:
            lines.append(f"{len(self.unreachable)} new pieces are never produced for their own text, e.g. "
                         f"{self.unreachable[:10]}")
        return lines


# ---------------------------------------------------------------------- protobuf helpers
def model_proto_class() -> type[ModelProto]:
    """The ``ModelProto`` message class (needs the ``protobuf`` package)."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as e:  # protobuf missing or too old
        raise TokenizerError(
            f"editing SentencePiece models needs the protobuf package: pip install protobuf ({e})"
        ) from None
    return sentencepiece_model_pb2.ModelProto


def parse_model(data: bytes, source: str = "<bytes>") -> ModelProto:
    """Parse a serialized SentencePiece model."""
    from google.protobuf.message import DecodeError

    proto = model_proto_class()()
    try:
        proto.ParseFromString(data)
    except DecodeError as e:
        raise TokenizerError(f"{source}: not a SentencePiece model ({e})") from None
    if not proto.pieces:
        raise TokenizerError(f"{source}: not a SentencePiece model (no pieces)")
    return proto


def load_model_proto(path: str) -> ModelProto:
    """Read a ``.model`` file as a ModelProto."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TokenizerError(f"{path}: cannot read SentencePiece model ({e.strerror})") from None
    return parse_model(data, path)


def serialize_model(proto: ModelProto) -> bytes:
    """Deterministic serialization (same proto -> same bytes)."""
    return proto.SerializeToString(deterministic=True)


def processor_for(proto: ModelProto, *, piece_text_mode: bool = False) -> spm.SentencePieceProcessor:
    """A processor for ``proto``.

    ``piece_text_mode`` encodes the text of a piece as the piece stands: no dummy "▁" before it and no
    whitespace removed (a piece's own "▁" is its space).
    """
    if piece_text_mode:
        copy = model_proto_class()()
        copy.CopyFrom(proto)
        copy.normalizer_spec.add_dummy_prefix = False
        copy.normalizer_spec.remove_extra_whitespaces = False
        proto = copy
    return spm.SentencePieceProcessor(model_proto=serialize_model(proto))


def piece_text(piece: str) -> str:
    """The text a piece stands for ("▁" is a space)."""
    return piece.replace(SPACE, " ")


# ---------------------------------------------------------------------- merging
def skip_reason(piece, base_pieces: set[str], config: MergeConfig) -> str | None:
    """Why an extra-model piece is not appended, or None if it is."""
    if piece.type == USER_DEFINED:
        if not config.include_user_defined:
            return "user_defined"
    elif piece.type != NORMAL:
        return "special"
    if piece.piece in base_pieces:
        return "in_base"
    text = piece_text(piece.piece)
    has_alnum = any(c.isascii() and c.isalnum() for c in text)
    if has_alnum and not config.allow_ascii_alnum:
        return "ascii_alnum"
    if text.isascii() and not has_alnum and not config.allow_ascii_symbols:
        return "ascii_symbols"
    return None


def resolve_score_mode(base: ModelProto, mode: ScoreMode) -> str:
    """``auto`` -> ``after_base`` for a BPE base (scores are merge priorities), else ``keep``."""
    if mode != "auto":
        return mode
    bpe = base.trainer_spec.model_type == type(base.trainer_spec).BPE
    return "after_base" if bpe else "keep"


def merge_model_protos(base: ModelProto, extra: ModelProto, config: MergeConfig) -> tuple[ModelProto, list[str], dict]:
    """Append the eligible pieces of ``extra`` to a copy of ``base``.

    Returns:
        (merged proto, the added pieces in id order, {skip reason: count}).
    """
    merged = model_proto_class()()
    merged.CopyFrom(base)
    base_pieces = {p.piece for p in base.pieces}
    mode = resolve_score_mode(base, config.score_mode)
    floor = min((p.score for p in base.pieces if p.type == NORMAL), default=0.0)
    added: list[str] = []
    skipped: Counter[str] = Counter({reason: 0 for reason in SKIP_REASONS})
    for piece in extra.pieces:
        reason = skip_reason(piece, base_pieces, config)
        if reason is None and config.max_new_pieces is not None and len(added) >= config.max_new_pieces:
            reason = "limit"
        if reason is not None:
            skipped[reason] += 1
            continue
        new = merged.pieces.add()
        new.piece = piece.piece
        new.type = piece.type
        new.score = piece.score if mode == "keep" else floor - 1.0 - len(added)
        base_pieces.add(piece.piece)
        added.append(piece.piece)
    merged.trainer_spec.vocab_size = len(merged.pieces)
    return merged, added, dict(skipped)


def check_extension(base: ModelProto, merged: ModelProto, *, base_name: str = "base", merged_name: str = "merged"):
    """Raise TokenizerError unless ``merged`` starts with exactly the pieces of ``base`` (piece, score, type)."""
    if len(merged.pieces) < len(base.pieces):
        raise TokenizerError(
            f"{merged_name} has {len(merged.pieces)} pieces, fewer than the {len(base.pieces)} of {base_name}: "
            "it is not an extension of it"
        )
    for i, (old, new) in enumerate(zip(base.pieces, merged.pieces, strict=False)):
        if (old.piece, old.score, old.type) != (new.piece, new.score, new.type):
            raise TokenizerError(
                f"{merged_name} is not an extension of {base_name}: id {i} is {new.piece!r} "
                f"(score {new.score}, type {new.type}) there but {old.piece!r} (score {old.score}, type {old.type}) "
                f"in {base_name}; build it with scripts/merge_tokenizers.py"
            )


# ---------------------------------------------------------------------- measuring
def unreachable_pieces(merged: ModelProto, first_new_id: int) -> list[str]:
    """New pieces that encoding their own text (without a dummy prefix) does not produce as one piece."""
    processor = processor_for(merged, piece_text_mode=True)
    out = []
    for i in range(first_new_id, len(merged.pieces)):
        piece = merged.pieces[i].piece
        if processor.encode(piece_text(piece)) != [i]:
            out.append(piece)
    return out


def compare_tokenization(
    base: ModelProto, merged: ModelProto, *, zh_lines: Sequence[str], probe_lines: Sequence[str]
) -> dict:
    """Chinese token counts before/after and the probe lines whose pieces changed (see MergeReport)."""
    before, after = processor_for(base), processor_for(merged)
    zh = [line for line in zh_lines if line.strip()]
    probe = [line for line in probe_lines if line.strip()]
    changed = []
    for line in probe:
        old, new = before.encode(line, out_type=str), after.encode(line, out_type=str)
        if old != new:
            changed.append(ProbeChange(line, old, new))
    return dict(
        zh_lines=len(zh),
        zh_chars=sum(len(line) for line in zh),
        zh_tokens_before=sum(len(ids) for ids in before.encode(zh)) if zh else 0,
        zh_tokens_after=sum(len(ids) for ids in after.encode(zh)) if zh else 0,
        probe_lines=len(probe),
        probe_changed=changed,
    )


def merge_tokenizers(
    base_path: str,
    extra_path: str,
    output_path: str,
    config: MergeConfig | None = None,
    *,
    zh_eval_lines: Iterable[str] = (),
    probe_lines: Iterable[str] = DEFAULT_PROBE,
) -> MergeReport:
    """Merge the model at ``extra_path`` into the one at ``base_path``, write it to ``output_path`` atomically,
    and report what changed (Chinese tokens per character on ``zh_eval_lines``, re-split ``probe_lines``)."""
    base, extra = load_model_proto(base_path), load_model_proto(extra_path)
    if base.normalizer_spec.name != extra.normalizer_spec.name:
        logger.warning(
            "%s normalizes with %r but %s with %r: the merged model normalizes like the base, so some new "
            "pieces may never match", base_path, base.normalizer_spec.name, extra_path, extra.normalizer_spec.name,
        )
    merged, added, skipped = merge_model_protos(base, extra, config or MergeConfig())
    data = serialize_model(merged)
    write_bytes(output_path, data)
    report = MergeReport(
        base_pieces=len(base.pieces),
        extra_pieces=len(extra.pieces),
        merged_pieces=len(merged.pieces),
        added=len(added),
        skipped=skipped,
        unreachable=unreachable_pieces(merged, len(base.pieces)),
        **compare_tokenization(base, merged, zh_lines=list(zh_eval_lines), probe_lines=list(probe_lines)),
    )
    for line in report.summary():
        logger.info("%s", line)
    return report
