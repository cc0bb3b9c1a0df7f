"""Typed configuration of preprocessing (``DataConfig``) and the flags generated from it.

Flag names are the original ``preprocess.py`` flags; each flag's help and default come from the field, so they
have one source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tencentpretrain.cli import flag
from tencentpretrain.errors import ConfigError
from tencentpretrain.registry import DATA_PROCESSORS, TOKENIZERS


def _template_names() -> list[str]:
    from tencentpretrain.tokenizers.templates import template_names

    return template_names()


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """What ``preprocess.py`` builds: corpus, processor and its options, output location."""

    corpus_path: str = field(metadata=flag("input corpus: one document per line, or JSON lines"))
    dataset_path: str = field(
        default="dataset.pt", metadata=flag("output dataset directory (a directory even when named *.pt)")
    )
    data_processor: str = field(
        default="lm", metadata=flag("how lines become training instances", choices=DATA_PROCESSORS)
    )
    seq_length: int = field(default=128, metadata=flag("tokens per training sequence (instances hold one more)"))
    processes_num: int = field(default=1, metadata=flag("worker processes; the output is the same for any number"))
    json_format_corpus: bool = field(default=False, metadata=flag('lm: each line is a JSON object {"text": ...}'))
    full_sentences: bool = field(
        default=False, metadata=flag("lm/mlm/t5: pack documents back to back across sequence boundaries")
    )
    seed: int = field(default=7, metadata=flag("random seed (recorded; the built-in processors are deterministic)"))
    prompt_template: str | None = field(
        default=None,
        metadata=flag("alpaca/chat: how prompt and response are laid out (default: plain for alpaca, user_bot for "
                       "chat)", choices=_template_names),
    )
    train_on_prompt: bool = field(
        default=False, metadata=flag("alpaca/chat: score prompt tokens too, not only responses and their end token")
    )
    skip_bad_lines: bool = field(
        default=False, metadata=flag("count and skip malformed lines (bad JSON, invalid UTF-8) instead of failing")
    )
    # --- masked language models (bert, albert, mlm) and span corruption (t5) ---
    dup_factor: int = field(
        default=5, metadata=flag("bert/albert/mlm: copies of each document, each masked (and paired) differently; "
                                  "1 with --dynamic_masking")
    )
    short_seq_prob: float = field(
        default=0.1, metadata=flag("bert/albert: probability of a shorter sentence pair (a random target length)")
    )
    dynamic_masking: bool = field(
        default=False, metadata=flag("bert/albert/mlm/t5: draw new masks every epoch at batch time (static masking "
                                      "otherwise: one fixed mask per stored copy)")
    )
    whole_word_masking: bool = field(
        default=False, metadata=flag("bert/albert/mlm: mask whole words; Chinese words come from jieba when it is "
                                      "installed, else from random 1-3 character spans")
    )
    span_masking: bool = field(
        default=False, metadata=flag("bert/albert/mlm: mask spans of whole words (SpanBERT) instead of single words")
    )
    span_geo_prob: float = field(
        default=0.2, metadata=flag("bert/albert/mlm: --span_masking span lengths are geometric with this parameter")
    )
    span_max_length: int = field(
        default=10, metadata=flag("bert/albert/mlm: --span_masking spans are at most this many words")
    )
    tgt_seq_length: int = field(
        default=128, metadata=flag("mt/gsg: target sequence length (mt keeps tgt_seq_length + 1 target tokens, "
                                   "[CLS] and [SEP] included; gsg keeps tgt_seq_length)")
    )
    sentence_selection_strategy: str = field(
        default="lead", metadata=flag("gsg: which sentences become gaps: the first 30%% (lead) or 30%% drawn at "
                                      "random (random)", choices=("lead", "random"))
    )
    # --- the target side of mt (the original's tgt_tokenizer_opts); no tgt_* file: the source tokenizer ---
    tgt_tokenizer: str = field(
        default="bert", metadata=flag("mt: tokenizer of the target side", choices=TOKENIZERS)
    )
    tgt_vocab_path: str | None = field(default=None, metadata=flag("mt: vocabulary file of the target side"))
    tgt_merges_path: str | None = field(default=None, metadata=flag("mt: BPE merges file of the target side"))
    tgt_spm_model_path: str | None = field(
        default=None, metadata=flag("mt: SentencePiece model of the target side")
    )
    tgt_do_lower_case: str = field(
        default="true", metadata=flag("mt: lower-case the target side (bert tokenizer)", choices=("true", "false"))
    )
    # --- images (vit) ---
    image_height: int = field(default=224, metadata=flag("vit: images are resized to this height"))
    image_width: int = field(default=224, metadata=flag("vit: images are resized to this width"))
    channels_num: int = field(default=3, metadata=flag("vit: 3 = RGB, 1 = grayscale"))

    def __post_init__(self) -> None:
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

