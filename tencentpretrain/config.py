"""Typed model configuration whose field names are TencentPretrain's JSON keys.

``ModelConfig`` is frozen and validated once, in ``__post_init__``; derived values (head size, KV heads) are
computed there, so no code downstream checks ``hasattr``. JSON files of the original framework load unchanged:
model keys become fields, keys that belong to other configs (``data_processor``, ``tokenizer``, ...) are returned
separately, and anything else is a ConfigError naming the file, the key and the close matches.

Precedence is dataclass defaults < JSON file < flags typed on the command line; see ``parse_args_with_config``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tencentpretrain.atomic import write_json
from tencentpretrain.cli import add_dataclass_flags, flag
from tencentpretrain.errors import ConfigError
from tencentpretrain.registry import ACTIVATIONS, DECODERS, EMBEDDINGS, ENCODERS, FEEDFORWARDS, LAYERNORMS, TARGETS

MASKS = ("causal", "fully_visible", "causal_with_prefix")
# The original's encoder treats every mask name other than causal and fully_visible as causal_with_prefix; its
# dall-e and talk2face configs say "prefix". Accepted as that alias (and stored as the canonical name).
MASK_ALIASES = {"prefix": "causal_with_prefix"}
DUAL = "dual"  # the two-stream embedding and encoder (SBERT, siamese LSTM, CLIP)
STREAMS = ("stream_0", "stream_1")
LAYERNORM_POSITIONS = ("pre", "post")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture of a model. Field names are exactly the TencentPretrain JSON keys."""

    # --- sizes ---
    emb_size: int = 768  # width of the word/pos/seg embeddings
    hidden_size: int = 768  # transformer width
    feedforward_size: int = 3072  # inner width of the feed-forward block
    heads_num: int = 12  # query heads
    local_kv_heads_num: int | None = None  # key/value heads (grouped-query attention); None = heads_num
    attention_head_size: int | None = None  # per-head width; None = hidden_size // heads_num
    layers_num: int = 12  # encoder layers
    decoder_layers_num: int | None = None  # decoder layers (encoder-decoder models); None = layers_num
    vocab_size: int | None = None  # None = taken from the tokenizer, as in the original
    max_seq_length: int = 512  # size of the learned position table; the context length for generation

    # --- components (names resolved in the registries) ---
    embedding: tuple[str, ...] = field(default=("word",), metadata=flag(choices=EMBEDDINGS))  # summed in order
    tgt_embedding: tuple[str, ...] = field(default=("word",), metadata=flag(choices=EMBEDDINGS))  # decoder side
    encoder: str = field(default="transformer", metadata=flag(choices=ENCODERS))  # the layer stack
    decoder: str | None = field(default=None, metadata=flag(choices=DECODERS))  # None = no decoder (one stack)
    target: tuple[str, ...] = field(default=("lm",), metadata=flag(choices=TARGETS))  # training objectives
    feed_forward: str = field(default="dense", metadata=flag(choices=FEEDFORWARDS))  # "gated" is SwiGLU
    hidden_act: str = field(default="gelu", metadata=flag(choices=ACTIVATIONS))  # feed-forward activation
    layernorm: str = field(default="normal", metadata=flag(choices=LAYERNORMS))  # normal = the original's LayerNorm
    layernorm_positioning: str = field(default="post", metadata=flag(
        "pre adds a final encoder.layer_norm", choices=LAYERNORM_POSITIONS))
    layernorm_eps: float = 1e-6
    mask: str = field(default="fully_visible", metadata=flag(
        choices=MASKS + tuple(MASK_ALIASES)))  # attention mask of the encoder; "prefix" = causal_with_prefix

    # --- options ---
    dropout: float = 0.1
    remove_embedding_layernorm: bool = False  # no embedding.layer_norm
    remove_transformer_bias: bool = False  # bias=False on attention and feed-forward linears
    qkv_bias: bool = False  # biases on the Q, K, V linears even with remove_transformer_bias (Qwen2)
    remove_attention_scale: bool = False  # no 1/sqrt(head size) on attention scores
    has_lmtarget_bias: bool = False  # bias on target.lm.output_layer
    tie_weights: bool = False  # share the word embedding with the output layer
    share_embedding: bool = False  # share source and target word embeddings (encoder-decoder)
    parameter_sharing: bool = False  # one layer applied layers_num times (ALBERT)
    factorized_embedding_parameterization: bool = False  # emb_size -> hidden_size projection (ALBERT)
    has_residual_attention: bool = False  # carry raw attention scores to the next layer (RealFormer)
    relative_position_embedding: bool = False  # T5 relative position buckets
    relative_attention_buckets_num: int = 32
    rotary_position_embedding: bool = False  # RoPE, Meta's interleaved layout
    rope_theta: float = 10000.0  # RoPE base
    rope_scaling: dict[str, Any] | None = None  # JSON, e.g. {"type": "linear", "factor": 2.0}
    alibi_position_embedding: bool = False  # ALiBi: per-head linear bias of the key position (BLOOM)
    layer_number_scale: bool = False  # the original's fp16 query-key layer scaling; the same function (see docs)
    pooling: str = "first"  # sentence representation of classification targets
    labels_num: int | None = None  # classes of a "cls" target
    label_smoothing: float = 0.0
    ignore_index: int | None = None

    # --- recurrent and convolutional encoders ---
    bidirectional: bool = False  # rnn/lstm/gru: one bidirectional stack, each direction hidden_size / 2 wide
    kernel_size: int | None = None  # gatedcnn (required): convolution width over the sequence
    block_size: int | None = None  # gatedcnn (required): layers per residual connection

    # --- two streams (``embedding: ["dual"]``, ``encoder: "dual"``) ---
    stream_0: dict[str, Any] | None = None  # JSON: stream 0's keys over the top-level ones
    stream_1: dict[str, Any] | None = None  # JSON: stream 1's keys over the top-level ones
    projection: bool = False  # clr: project each stream's pooled vector to feature_size
    feature_size: int | None = None  # clr with projection (required): width of the projected features

    # --- vision (``patch`` embedding) ---
    image_height: int = 224  # input image height in pixels
    image_width: int = 224  # input image width in pixels
    patch_size: int = 16  # square patch side; (height / patch) * (width / patch) patches + 1 [CLS]
    channels_num: int = 3  # image channels

    def __post_init__(self) -> None:
        for name in ("embedding", "tgt_embedding", "target"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "mask", MASK_ALIASES.get(self.mask, self.mask))
        self._validate()

    # ------------------------------------------------------------------ derived values
    @property
    def head_size(self) -> int:
        """Width of one attention head."""
        return self.attention_head_size or self.hidden_size // self.heads_num

    @property
    def kv_heads_num(self) -> int:
        """Number of key/value heads (equals heads_num without grouped-query attention)."""
        return self.local_kv_heads_num or self.heads_num

    @property
    def use_bias(self) -> bool:
        """Whether attention and feed-forward linears have biases."""
        return not self.remove_transformer_bias

    @property
    def use_qkv_bias(self) -> bool:
        """Whether the attention's Q, K and V linears have biases (``qkv_bias`` adds them to a bias-free model)."""
        return self.use_bias or self.qkv_bias

    @property
    def use_embedding_layernorm(self) -> bool:
        return not self.remove_embedding_layernorm

    @property
    def rope_scaling_factor(self) -> float:
        """Linear RoPE position-interpolation factor (1.0 = none)."""
        if not self.rope_scaling:
            return 1.0
        return float(self.rope_scaling.get("factor", 1.0))

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        positive = ("emb_size", "hidden_size", "feedforward_size", "heads_num", "layers_num")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("vocab_size", "kernel_size", "block_size", "feature_size"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        _check_choice("mask", self.mask, MASKS)
        _check_choice("layernorm_positioning", self.layernorm_positioning, LAYERNORM_POSITIONS)
        self._validate_components()
        if self.uses_attention:
            self._validate_attention()
        if self.is_dual:
            self._validate_streams()

    def _validate_attention(self) -> None:
        """Head arithmetic and position schemes: only for models with attention layers (not rnn or gatedcnn)."""
        if self.attention_head_size is None and self.hidden_size % self.heads_num:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not divisible by heads_num={self.heads_num}; "
                "set attention_head_size or change one of them"
            )
        if self.heads_num % self.kv_heads_num:
            raise ConfigError(
                f"heads_num={self.heads_num} is not divisible by local_kv_heads_num={self.kv_heads_num}"
            )
        if self.rotary_position_embedding and self.head_size % 2:
            raise ConfigError(f"rotary_position_embedding needs an even head size, got {self.head_size}")
        schemes = [k for k in ("alibi_position_embedding", "rotary_position_embedding", "relative_position_embedding")
                   if getattr(self, k)]
        if len(schemes) > 1:
            raise ConfigError(f"{' and '.join(schemes)} are alternative position schemes: set one of them")
        if self.alibi_position_embedding and self.decoder is not None:
            raise ConfigError("alibi_position_embedding is for decoder-only models (BLOOM); this config has a decoder")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("type", self.rope_scaling.get("rope_type", "linear"))
            if kind != "linear" or float(self.rope_scaling.get("factor", 1.0)) <= 0:
                raise ConfigError(
                    f"rope_scaling {self.rope_scaling!r} is not supported; use {{\"type\": \"linear\", \"factor\": F}}"
                )

    def _validate_components(self) -> None:
        checks = [(EMBEDDINGS, "embedding", n) for n in self.embedding]
        checks += [(ENCODERS, "encoder", self.encoder), (FEEDFORWARDS, "feed_forward", self.feed_forward)]
        checks += [(ACTIVATIONS, "hidden_act", self.hidden_act), (LAYERNORMS, "layernorm", self.layernorm)]
        checks += [(TARGETS, "target", n) for n in self.target]
        if self.decoder is not None:
            checks += [(DECODERS, "decoder", self.decoder)]
            checks += [(EMBEDDINGS, "tgt_embedding", n) for n in self.tgt_embedding]
        for registry, key, name in checks:
            if name not in registry:
                raise ConfigError(f"{key}: {registry.unknown_message(name)}")
        for key in getattr(ENCODERS.get(self.encoder), "required_keys", ()):
            if getattr(self, key) is None:
                raise ConfigError(f"encoder {self.encoder!r} needs {key} in the config")
        if (DUAL in self.embedding) != (self.encoder == DUAL):
            raise ConfigError('the two-stream model needs both "embedding": ["dual"] and "encoder": "dual"')
        if DUAL in self.embedding and len(self.embedding) > 1:
            raise ConfigError(f'embedding "dual" is the whole embedding; got {list(self.embedding)}')
        if not self.is_dual and (self.stream_0 is not None or self.stream_1 is not None):
            raise ConfigError('stream_0/stream_1 describe the streams of a two-stream model: set "embedding": '
                              '["dual"] and "encoder": "dual", or remove them')

    def _validate_streams(self) -> None:
        absent = [s for s in STREAMS if not isinstance(getattr(self, s), dict)]
        if absent:
            raise ConfigError(f"a dual config (embedding ['dual'], encoder 'dual') needs the objects "
                              f"{', '.join(absent)} describing each stream, as in models/sbert/base_config.json")
        for name, stream in zip(STREAMS, self.streams):
            if DUAL in stream.embedding or stream.encoder == DUAL:
                raise ConfigError(f"{name}: a stream sets its own embedding and encoder (not 'dual')")

    # ------------------------------------------------------------------ kinds of model
    @property
    def is_dual(self) -> bool:
        """Two streams (``embedding: ["dual"]``, ``encoder: "dual"``): SBERT, siamese LSTM, CLIP."""
        return self.encoder == DUAL

    @property
    def uses_attention(self) -> bool:
        """Whether the encoder or decoder has attention layers (whose head arithmetic must work out)."""
        if self.decoder is not None:
            return True
        return bool(getattr(ENCODERS.get(self.encoder), "uses_attention", False))

    @functools.cached_property
    def streams(self) -> tuple[ModelConfig, ModelConfig]:
        """The two streams of a dual config: each is the top-level keys overridden by its ``stream_i`` object
        (the original's rule), validated as a model config of its own."""
        top = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in STREAMS}
        configs = []
        for name in STREAMS:
            stream_keys, _ = split_config_keys(getattr(self, name) or {}, name, model_only=True)
            unset = [k for k in ("embedding", "encoder") if k not in stream_keys]
            if unset:
                raise ConfigError(f"{name}: a stream sets its own {' and '.join(unset)} (the top level's is 'dual')")
            try:
                configs.append(ModelConfig(**{**top, **stream_keys}))
            except ConfigError as e:
                raise ConfigError(f"{name}: {e}") from None
        return configs[0], configs[1]

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=2)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: unknown value {value!r}{hint}; choose from {', '.join(choices)}")


MODEL_KEYS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(ModelConfig))

# Keys found in the original's JSON files that configure something other than the architecture. They are
# accepted and handed back to the caller, which routes them to the data, training or tokenizer configs.
NON_MODEL_KEYS: frozenset[str] = frozenset(
    {
        "data_processor", "tokenizer", "tgt_tokenizer", "seq_length", "tgt_seq_length", "learning_rate",
        "warmup", "decay", "batch_size", "total_steps", "optimizer", "scheduler",
        "deepspeed_checkpoint_activations", "deepspeed_checkpoint_layers_num", "prefix_lm_loss",
        "lora_params",  # read by scripts/merge_lora.py (lora_alpha)
    }
)

_MULTIMODAL = "a key of the original's image/speech models ({}), which are not supported yet"
# Keys of the original that nothing here implements: an error that says so, never silently dropped.
UNSUPPORTED_KEYS: dict[str, str] = {
    **{key: _MULTIMODAL.format("beit, dall-e, talk2face") for key in ("image_tokenizer", "image_preprocess")},
    **{key: _MULTIMODAL.format("s2t speech-to-text") for key in (
        "specaugment", "audio_preprocess", "audio_feature_size", "max_audio_frames", "conv_channels",
        "conv_kernel_sizes", "conv_layers_num", "sampling_rate", "frame_length")},
}


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object from ``path`` with errors that name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def split_config_keys(
    data: dict[str, Any], source: str, *, model_only: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a config dict into (model keys, other known keys); unknown keys raise ConfigError (with
    ``model_only``, as do non-model keys: a stream object holds model keys only)."""
    model, other = {}, {}
    for key, value in data.items():
        if key in MODEL_KEYS:
            model[key] = value
        elif key in NON_MODEL_KEYS and not model_only:
            other[key] = value
        elif key in UNSUPPORTED_KEYS:
            raise ConfigError(f"{source}: key {key!r} is not supported: {UNSUPPORTED_KEYS[key]}")
        else:
            close = difflib.get_close_matches(key, sorted(MODEL_KEYS | NON_MODEL_KEYS), n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
    return model, other


def model_config_from_dict(data: dict[str, Any], source: str = "<dict>") -> ModelConfig:
    """Build a validated ModelConfig from model keys; errors name ``source``."""
    model_keys, _ = split_config_keys(data, source)
    try:
        return ModelConfig(**model_keys)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_model_config(path: str | os.PathLike) -> ModelConfig:
    """Load a TencentPretrain JSON config file into a ModelConfig (non-model keys are ignored here)."""
    return model_config_from_dict(read_json(path), os.fspath(path))


def save_model_config(config: ModelConfig, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write ``config`` (plus ``extra`` non-model keys) as a JSON file, atomically."""
    data = {k: v for k, v in config.to_dict().items() if v is not None}
    data.update(extra or {})
    write_json(path, data)


# ---------------------------------------------------------------------- command line
def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Add one flag per ModelConfig field (``--hidden_size``, ``--embedding word pos``, ``--no-tie_weights`` ...).

    Flag defaults are those of the dataclass; ``parse_args_with_config`` replaces them with the JSON values.
    Every bool also has ``--no-<key>``, since a JSON config may have set it. Component flags list the registered
    names (``--help`` shows them; a typo is a flag error).
    """
    add_dataclass_flags(parser, ModelConfig, title="model options (override the JSON config)", negatable_bools=True)


def parse_args_with_config(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse ``argv`` with the JSON at ``--config_path`` as defaults: defaults < JSON < explicit flags.

    Returns the namespace and the JSON's non-model keys. JSON keys that are also flags of ``parser``
    (``data_processor``, ``seq_length`` ...) become that flag's default too. Both ``--key value`` and
    ``--key=value`` work, since argparse does all the parsing.
    """
    known, _ = parser.parse_known_args(argv)
    config_path = getattr(known, "config_path", None)
    other: dict[str, Any] = {}
    if config_path:
        data = read_json(config_path)
        model_keys, other = split_config_keys(data, config_path)
        flag_dests = {a.dest for a in parser._actions}
        defaults = {k: v for k, v in {**model_keys, **other}.items() if k in flag_dests}
        parser.set_defaults(**defaults)
    return parser.parse_args(argv), other


def model_config_from_args(args: argparse.Namespace, source: str | None = None) -> ModelConfig:
    """Build the ModelConfig from a namespace filled by ``add_model_args`` (+ ``parse_args_with_config``).

    An invalid result is blamed on what made it invalid: on the JSON file when the file alone is already
    invalid, else on the command-line flags that override it.
    """
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ModelConfig) if hasattr(args, f.name)}
    config_path = source or getattr(args, "config_path", None)
    try:
        return ModelConfig(**values)
    except (ConfigError, TypeError) as e:
        if config_path:
            load_model_config(config_path)  # raises, naming the file, when the file alone is invalid
            raise ConfigError(f"command-line flags (overriding {config_path}): {e}") from None
        raise ConfigError(f"command-line flags: {e}") from None
