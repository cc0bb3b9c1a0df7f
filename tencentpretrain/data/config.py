"""Typed configuration of preprocessing (``DataConfig``) and the flags generated from it.

Flag names are the original ``preprocess.py`` flags; each flag's help and default come from the field, so they
have one source.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tencentpretrain.errors import ConfigError


def _flag(help: str, choices: str | None = None) -> dict[str, Any]:
    """Field metadata: the flag help and, for "processors" or "templates", where its choices come from."""
    return {"help": help, "choices": choices}


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """What ``preprocess.py`` builds: corpus, processor and its options, output location."""

    corpus_path: str = field(metadata=_flag("input corpus: one document per line, or JSON lines"))
    dataset_path: str = field(
        default="dataset.pt", metadata=_flag("output dataset directory (a directory even when named *.pt)")
    )
    data_processor: str = field(default="lm", metadata=_flag("how lines become training instances", "processors"))
    seq_length: int = field(default=128, metadata=_flag("tokens per training sequence (instances hold one more)"))
    processes_num: int = field(default=1, metadata=_flag("worker processes; the output is the same for any number"))
    json_format_corpus: bool = field(default=False, metadata=_flag('lm: each line is a JSON object {"text": ...}'))
    full_sentences: bool = field(
        default=False, metadata=_flag("lm: pack documents back to back across sequence boundaries")
    )
    seed: int = field(default=7, metadata=_flag("random seed (recorded; the built-in processors are deterministic)"))
    prompt_template: str | None = field(
        default=None,
        metadata=_flag("alpaca/chat: how prompt and response are laid out (default: plain for alpaca, user_bot for "
                       "chat)", "templates"),
    )
    train_on_prompt: bool = field(
        default=False, metadata=_flag("alpaca/chat: score prompt tokens too, not only responses and their end token")
    )
    skip_bad_lines: bool = field(
        default=False, metadata=_flag("count and skip malformed lines (bad JSON, invalid UTF-8) instead of failing")
    )
    # --- masked language models (bert, albert, mlm) and span corruption (t5) ---
    dup_factor: int = field(
        default=5, metadata=_flag("bert/albert/mlm: copies of each document, each masked (and paired) differently; "
                                  "1 with --dynamic_masking")
    )
    short_seq_prob: float = field(
        default=0.1, metadata=_flag("bert/albert: probability of a shorter sentence pair (a random target length)")
    )
    dynamic_masking: bool = field(
        default=False, metadata=_flag("bert/albert/mlm/t5: draw new masks every epoch at batch time (static masking "
                                      "otherwise: one fixed mask per stored copy)")
    )
    whole_word_masking: bool = field(
        default=False, metadata=_flag("bert/albert/mlm: mask whole words; Chinese words come from jieba when it is "
                                      "installed, else from random 1-3 character spans")
    )
    span_masking: bool = field(
        default=False, metadata=_flag("bert/albert/mlm: mask spans of whole words (SpanBERT) instead of single words")
    )
    span_geo_prob: float = field(
        default=0.2, metadata=_flag("bert/albert/mlm: --span_masking span lengths are geometric with this parameter")
    )
    span_max_length: int = field(
        default=10, metadata=_flag("bert/albert/mlm: --span_masking spans are at most this many words")
    )
    tgt_seq_length: int = field(default=128, metadata=_flag("t5: decoder sequence length (targets and sentinels)"))
    # --- images (vit) ---
    image_height: int = field(default=224, metadata=_flag("vit: images are resized to this height"))
    image_width: int = field(default=224, metadata=_flag("vit: images are resized to this width"))
    channels_num: int = field(default=3, metadata=_flag("vit: 3 = RGB, 1 = grayscale"))

    def __post_init__(self) -> None:
        from tencentpretrain.registry import DATA_PROCESSORS
        from tencentpretrain.tokenizers.templates import get_template

        if self.data_processor not in DATA_PROCESSORS:
            raise ConfigError(f"--data_processor: {DATA_PROCESSORS.unknown_message(self.data_processor)}")
        if self.prompt_template is not None:
            get_template(self.prompt_template)
        if self.seq_length < 1:
            raise ConfigError(f"--seq_length must be at least 1, got {self.seq_length}")
        if self.processes_num < 1:
            raise ConfigError(f"--processes_num must be at least 1, got {self.processes_num}")
        if self.dup_factor < 1:
            raise ConfigError(f"--dup_factor must be at least 1, got {self.dup_factor}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ConfigError(f"--short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        if not 0.0 < self.span_geo_prob <= 1.0:
            raise ConfigError(f"--span_geo_prob must be in (0, 1], got {self.span_geo_prob}")
        if self.span_max_length < 1:
            raise ConfigError(f"--span_max_length must be at least 1, got {self.span_max_length}")
        if self.tgt_seq_length < 2:
            raise ConfigError(f"--tgt_seq_length must be at least 2, got {self.tgt_seq_length}")
        if self.channels_num not in (1, 3):
            raise ConfigError(f"--channels_num must be 1 (grayscale) or 3 (RGB), got {self.channels_num}")
        if min(self.image_height, self.image_width) < 1:
            raise ConfigError(f"image size must be positive, got {self.image_height}x{self.image_width}")


def _choices(kind: str | None) -> list[str] | None:
    if kind == "processors":
        from tencentpretrain.registry import DATA_PROCESSORS

        return DATA_PROCESSORS.names()
    if kind == "templates":
        from tencentpretrain.tokenizers.templates import template_names

        return template_names()
    return None


def add_dataclass_args(parser: argparse.ArgumentParser | Any, cls: type, *, required: tuple[str, ...] = ()) -> None:
    """Add one ``--field`` flag per field of dataclass ``cls`` (bools are store_true switches)."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        kwargs: dict[str, Any] = {"help": meta.get("help", f.name.replace("_", " "))}
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        if f.name in required:
            kwargs["required"] = True
        if f.type in ("bool", bool):
            parser.add_argument(f"--{f.name}", action="store_true", **kwargs)
            continue
        kind = meta.get("choices")
        if kind is not None:
            kwargs["choices"] = _choices(kind)
        kwargs["type"] = {"int": int, "float": float}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
        parser.add_argument(f"--{f.name}", **kwargs)


def dataclass_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build dataclass ``cls`` from the namespace attributes named like its fields."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})
