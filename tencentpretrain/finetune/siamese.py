"""Siamese (SBERT-style) classification: ``finetune/run_classifier_siamese.py`` and
``inference/run_classifier_siamese_infer.py``.

Data: a TSV with the header ``label<TAB>text_a<TAB>text_b`` (the inference script reads ``text_a<TAB>text_b``).
Each text is encoded on its own as ``[CLS] text [SEP]`` (segment 1) by its stream; the two pooled vectors
``u`` and ``v`` (``--pooling``, default from the config) make ``[u, v, |u - v|, u * v]``, which the linear
``classifier`` maps to ``labels_num`` logits. Report, predictions and flags are the classifier's.

Config forms (``--config_path``):

* the original's dual config (``models/sbert/*.json``): ``"embedding": ["dual"]``, ``"encoder": "dual"`` and
  the keys ``stream_0`` / ``stream_1``, each overriding the top-level keys for its stream (embedding list,
  encoder, sizes...). ``tie_weights: true`` shares one embedding and one encoder between the streams (their
  keys are still saved under both stream names, as the original saved them); false gives two separate ones.
  A stream's encoder must be registered here (``transformer``): the original's ``models/rnn/siamese_lstm_config.json``
  (``encoder: lstm``) is refused with the registered names.
* a single-stream config (e.g. ``models/bert/base_config.json``): both texts go through one shared stream of
  that config, stored under the same dual keys.

State keys are the original's: ``embedding.dual.embedding_{0,1}.*`` (each stream's embeddings and its
``layer_norm``), ``embedding.dual.stream_{0,1}_layer_norm.*`` (a second layer norm the original applies after
each stream's embedding), ``encoder.encoder_{0,1}.*`` and ``classifier.*``. ``--pretrained_model_path`` takes
such a checkpoint, or a single-stream one (a BERT): its ``embedding.*`` and ``encoder.*`` initialise both streams
(the original mapped them to names that do not exist, so its embeddings stayed random); the stream layer norms
then start as the identity-initialised LayerNorm.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.checkpoint import StateDict, load_state_into
from tencentpretrain.cli import dataclass_from_args
from tencentpretrain.config import ModelConfig, parse_args_with_config, split_config_keys
from tencentpretrain.convert.loading import iter_pretrained_state
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.finetune.classifier import (
    add_classifier_infer_flags,
    count_labels,
    evaluate_classifier,
    write_class_predictions,
)
from tencentpretrain.finetune.data import (
    Example,
    SpecialIds,
    encode_pair,
    pad_batch,
    parse_label,
    read_tsv,
    require_examples,
)
from tencentpretrain.finetune.loop import fit_on_files, log_file, seed_run
from tencentpretrain.finetune.model import TaskOutput, load_finetuned_weights
from tencentpretrain.finetune.options import (
    FinetuneOptions,
    InferOptions,
    finetune_parser,
    infer_parser,
    required_labels_num,
)
from tencentpretrain.layers.dropout import Dropout
from tencentpretrain.layers.pooling import pool
from tencentpretrain.layers.standard_layer_norm import affine_layernorm_name
from tencentpretrain.models.model import Embedding, init_module_
from tencentpretrain.registry import ENCODERS, LAYERNORMS
from tencentpretrain.tokenizers import Tokenizer, build_tokenizer, tokenizer_config_from_args

logger = logging.getLogger("tencentpretrain.finetune")

DUAL = "dual"
STREAMS = ("stream_0", "stream_1")


# ---------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class DualConfig:
    """The two streams' architectures, whether they share weights, and the top-level pooling and dropout."""

    streams: tuple[ModelConfig, ModelConfig]
    tied: bool
    pooling: str
    dropout: float


def dual_config_from_args(args: argparse.Namespace, other: dict[str, Any], source: str) -> DualConfig:
    """The streams of the original's dual config (``stream_0``/``stream_1`` over the top-level keys), or one
    shared stream of a single-stream config."""
    top = {f.name: getattr(args, f.name) for f in dataclasses.fields(ModelConfig) if hasattr(args, f.name)}
    is_dual = DUAL in (top.get("embedding") or ()) or top.get("encoder") == DUAL
    if not is_dual:
        config = _model_config(top, source)
        return DualConfig((config, config), True, config.pooling, config.dropout)
    absent = [s for s in STREAMS if not isinstance(other.get(s), dict)]
    if absent:
        raise ConfigError(f"{source}: a dual config (embedding ['dual'], encoder 'dual') needs the objects "
                          f"{', '.join(absent)} describing each stream, as in models/sbert/base_config.json")
    streams = []
    for name in STREAMS:
        stream_keys, _ = split_config_keys(other[name], f"{source}: {name}")
        streams.append(_model_config({**top, **stream_keys}, f"{source}: {name}"))
    if streams[0].hidden_size != streams[1].hidden_size:
        raise ConfigError(f"{source}: the streams' hidden_size differ ({streams[0].hidden_size} and "
                          f"{streams[1].hidden_size}); the siamese features compare them element by element")
    return DualConfig((streams[0], streams[1]), bool(top.get("tie_weights")), top.get("pooling", "first"),
                      top.get("dropout", 0.1))


def _model_config(values: dict[str, Any], source: str) -> ModelConfig:
    try:
        return ModelConfig(**values)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from None


# ---------------------------------------------------------------------- model
class DualEmbedding(nn.Module):
    """Each stream's embeddings (``embedding_i``, with its own layer norm and dropout), then the stream's second
    layer norm and the shared dropout, as the original's ``dual`` embedding."""

    def __init__(self, config: DualConfig, vocab_size: int) -> None:
        super().__init__()
        for i, stream in enumerate(config.streams):
            if i == 1 and config.tied:
                self.embedding_1 = self.embedding_0
            else:
                self.add_module(f"embedding_{i}", Embedding(stream, vocab_size, stream.embedding))
            norm = LAYERNORMS.get(affine_layernorm_name(stream.layernorm))
            self.add_module(f"stream_{i}_layer_norm", norm(stream.emb_size, eps=stream.layernorm_eps))
        self.dropout = Dropout(config.dropout)

    def forward(self, stream: int, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """(B, T) ids of one stream -> (B, T, E)."""
        embedding = getattr(self, f"embedding_{stream}")
        emb = embedding(src, seg, embedding.default_positions(src))
        return self.dropout(getattr(self, f"stream_{stream}_layer_norm")(emb))


class DualEmbeddingHolder(nn.Module):
    """``embedding.dual``: where the original's embedding wrapper kept its ``dual`` embedding."""

    def __init__(self, config: DualConfig, vocab_size: int) -> None:
        super().__init__()
        self.dual = DualEmbedding(config, vocab_size)


class DualEncoder(nn.Module):
    """``encoder_0`` and ``encoder_1`` (one module under both names when tied)."""

    def __init__(self, config: DualConfig) -> None:
        super().__init__()
        self.encoder_0 = ENCODERS.get(config.streams[0].encoder)(config.streams[0])
        self.encoder_1 = self.encoder_0 if config.tied else ENCODERS.get(config.streams[1].encoder)(config.streams[1])


class SiameseClassifier(nn.Module):
    """Two separately encoded texts -> ``classifier([u, v, |u - v|, u * v])``; keys as the original's."""

    def __init__(self, config: DualConfig, vocab_size: int, *, labels_num: int) -> None:
        super().__init__()
        self.dual_config = config
        self.labels_num = labels_num
        self.embedding = DualEmbeddingHolder(config, vocab_size)
        self.encoder = DualEncoder(config)
        self.classifier = nn.Linear(4 * config.streams[0].hidden_size, labels_num)

    def features(self, stream: int, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """The pooled vector (B, H) of one stream's texts ``src`` (B, T); seg 0 marks padding."""
        emb = self.embedding.dual(stream, src, seg)
        positions = torch.arange(src.shape[1], device=src.device).expand(src.shape[0], -1)
        hidden = getattr(self.encoder, f"encoder_{stream}")(emb, seg, positions=positions, honor_padding=True)
        return pool(hidden, seg > 0, self.dual_config.pooling)

    def forward(self, batch: dict[str, torch.Tensor]) -> TaskOutput:
        """batch: ``src_a``, ``seg_a`` (B, Ta), ``src_b``, ``seg_b`` (B, Tb); optional ``label`` (B,)."""
        u = self.features(0, batch["src_a"], batch["seg_a"])
        v = self.features(1, batch["src_b"], batch["seg_b"])
        logits = self.classifier(torch.cat([u, v, (u - v).abs(), u * v], dim=-1))  # (B, labels_num)
        if "label" not in batch:
            return TaskOutput(None, logits)
        return TaskOutput(F.cross_entropy(logits.float(), batch["label"]), logits)

    @torch.no_grad()
    def init_weights(self) -> None:
        for name, module in self.named_modules():
            init_module_(name, module)


def stream_keys(state: StateDict) -> StateDict:
    """A checkpoint's state under the dual keys: dual checkpoints as stored (also the original SBERT
    converter's ``embedding.embedding_i.*``), a single-stream one copied into both streams."""
    if any(k.startswith(("embedding.dual.", "encoder.encoder_0.")) for k in state):
        return state
    if any(k.startswith("embedding.embedding_0.") for k in state):
        return {("embedding.dual." + k[len("embedding."):] if k.startswith("embedding.embedding_") else k): v
                for k, v in state.items()}
    mapped = {}
    for key, value in state.items():
        for prefix, stream_prefix in (("embedding.", "embedding.dual.embedding_"), ("encoder.", "encoder.encoder_")):
            if key.startswith(prefix):
                for i in (0, 1):
                    mapped[f"{stream_prefix}{i}.{key[len(prefix):]}"] = value
                break
        else:
            mapped[key] = value
    return mapped


def load_pretrained_siamese(model: SiameseClassifier, path: str) -> None:
    """Both streams' weights from ``path`` (checked: every embedding/encoder weight must be there, bar the
    stream layer norms); the classifier stays fresh unless the checkpoint has it."""
    state: StateDict = {}
    for _, shard in iter_pretrained_state(path, model.dual_config.streams[0]):
        state.update(shard)
    state = stream_keys(state)
    expected = model.state_dict()
    optional = [k for k in expected if k.startswith(("classifier.", "embedding.dual.stream_"))]
    missing = [k for k in expected if k not in state and k not in optional]
    if missing:
        raise CheckpointError(f"{path}: the pretrained model lacks {len(missing)} weight(s) of the streams this "
                              f"config builds ({', '.join(missing[:8])}); check --config_path")
    fresh = [k for k in expected if k not in state]
    if fresh:
        logger.info("newly initialised (not in %s): %s", path, ", ".join(fresh))
    load_state_into(model, {k: v for k, v in state.items() if k in expected}, source=path,
                    allow_missing=tuple(fresh))


# ---------------------------------------------------------------------- data
def read_siamese(path: str, tokenizer: Tokenizer, seq_length: int, *, labels_num: int | None,
                 with_labels: bool = True) -> list[Example]:
    """Examples ``src_a``/``seg_a`` and ``src_b``/``seg_b`` (each ``[CLS] text [SEP]``, segment 1), ``label``."""
    specials = SpecialIds.of(tokenizer)
    examples = []
    for row in read_tsv(path, (("label",) if with_labels else ()) + ("text_a", "text_b")):
        src_a, seg_a = encode_pair(tokenizer, specials, row.get("text_a"), None, seq_length)
        src_b, seg_b = encode_pair(tokenizer, specials, row.get("text_b"), None, seq_length)
        example: Example = {"src_a": src_a, "seg_a": seg_a, "src_b": src_b, "seg_b": seg_b}
        if with_labels:
            example["label"] = parse_label(row, labels_num)
        examples.append(example)
    return examples


def collate_siamese(tokenizer: Tokenizer):
    pad_id = SpecialIds.of(tokenizer).pad
    return lambda examples: pad_batch(examples, {"src_a": pad_id, "src_b": pad_id})


# ---------------------------------------------------------------------- scripts
def parse_siamese(parser: argparse.ArgumentParser, argv: Sequence[str] | None
                  ) -> tuple[argparse.Namespace, DualConfig, Tokenizer]:
    args, other = parse_args_with_config(parser, argv)
    source = getattr(args, "config_path", None) or "command-line flags"
    return args, dual_config_from_args(args, other, source), build_tokenizer(tokenizer_config_from_args(args))


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_classifier_siamese.py``."""
    args, config, tokenizer = parse_siamese(finetune_parser(__doc__, adversarial=False), argv)
    options: FinetuneOptions = dataclass_from_args(FinetuneOptions, args)
    labels_num = args.labels_num or count_labels(options.train_path)
    with log_file(options.log_path):
        seed_run(options)
        model = SiameseClassifier(config, tokenizer.vocab_size, labels_num=labels_num)
        if options.pretrained_model_path:
            load_pretrained_siamese(model, options.pretrained_model_path)
        else:
            model.init_weights()

        def read(path: str) -> list[Example]:
            return read_siamese(path, tokenizer, options.seq_length, labels_num=labels_num)

        collate = collate_siamese(tokenizer)
        fit_on_files(model, args, read, collate=collate,
                     evaluate=lambda m, ex: evaluate_classifier(m, ex, options.batch_size, collate))


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_classifier_siamese_infer.py``."""
    args, config, tokenizer = parse_siamese(infer_parser(__doc__, add_classifier_infer_flags), argv)
    options: InferOptions = dataclass_from_args(InferOptions, args)
    model = SiameseClassifier(config, tokenizer.vocab_size, labels_num=required_labels_num(args.labels_num))
    load_finetuned_weights(model, options.load_model_path)
    examples = read_siamese(options.test_path, tokenizer, options.seq_length, labels_num=args.labels_num,
                            with_labels=False)
    require_examples(options.test_path, examples)
    write_class_predictions(options.prediction_path, model, examples, options.batch_size, collate_siamese(tokenizer),
                            logits=args.output_logits, prob=args.output_prob)

