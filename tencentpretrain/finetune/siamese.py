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
  A stream's encoder is any registered one: ``models/rnn/siamese_lstm_config.json`` has LSTM streams.
* a single-stream config (e.g. ``models/bert/base_config.json``): both texts go through one shared stream of
  that config, stored under the same dual keys.

State keys are the original's: ``embedding.dual.embedding_{0,1}.*`` (each stream's embeddings and its
``layer_norm``), ``embedding.dual.stream_{0,1}_layer_norm.*`` (a second layer norm the original applies after
each stream's embedding, when the stream keeps embedding layer norms), ``encoder.encoder_{0,1}.*`` and ``classifier.*``. ``--pretrained_model_path`` takes
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
from tencentpretrain.config import DUAL, ModelConfig, parse_args_with_config
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
from tencentpretrain.layers.pooling import pool
from tencentpretrain.models.model import Embedding, init_module_
from tencentpretrain.registry import ENCODERS
from tencentpretrain.tokenizers import Tokenizer, build_tokenizer, tokenizer_config_from_args

logger = logging.getLogger("tencentpretrain.finetune")



# ---------------------------------------------------------------------- configuration
def dual_config_from_args(args: argparse.Namespace, source: str) -> ModelConfig:
    """The dual ModelConfig of the original's two-stream config (``stream_0``/``stream_1`` over the top-level
    keys, see ``ModelConfig.streams``), or of a single-stream config, whose one stream serves both texts."""
    top = {f.name: getattr(args, f.name) for f in dataclasses.fields(ModelConfig) if hasattr(args, f.name)}
    if DUAL not in (top.get("embedding") or ()) and top.get("encoder") != DUAL:
        single = _model_config(top, source)
        stream = {"embedding": list(single.embedding), "encoder": single.encoder}
        top.update(embedding=(DUAL,), encoder=DUAL, stream_0=stream, stream_1=stream, tie_weights=True)
    config = _model_config(top, source)
    first, second = config.streams
    if first.hidden_size != second.hidden_size:
        raise ConfigError(f"{source}: the streams' hidden_size differ ({first.hidden_size} and "
                          f"{second.hidden_size}); the siamese features compare them element by element")
    return config


def _model_config(values: dict[str, Any], source: str) -> ModelConfig:
    try:
        return ModelConfig(**values)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from None


# ---------------------------------------------------------------------- model
class SiameseClassifier(nn.Module):
    """Two separately encoded texts -> ``classifier([u, v, |u - v|, u * v])``; keys as the original's.

    The streams are the registered ``dual`` embedding and encoder (``embedding.dual.*``, ``encoder.encoder_i.*``).
    """

    def __init__(self, config: ModelConfig, vocab_size: int, *, labels_num: int) -> None:
        super().__init__()
        self.config = config
        self.labels_num = labels_num
        self.embedding = Embedding(config, vocab_size, config.embedding)
        self.encoder = ENCODERS.get(DUAL)(config)
        self.classifier = nn.Linear(4 * config.streams[0].hidden_size, labels_num)

    def features(self, stream: int, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """The pooled vector (B, H) of one stream's texts ``src`` (B, T); seg 0 marks padding."""
        positions = torch.arange(src.shape[1], device=src.device).expand(src.shape[0], -1)
        emb = self.embedding.dual.embed(stream, src, seg, positions)
        hidden = self.encoder.encode(stream, emb, seg, positions=positions, honor_padding=True)
        return pool(hidden, seg > 0, self.config.pooling)

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
    for _, shard in iter_pretrained_state(path, model.config.streams[0]):
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
                  ) -> tuple[argparse.Namespace, ModelConfig, Tokenizer]:
    args, _ = parse_args_with_config(parser, argv)
    source = getattr(args, "config_path", None) or "command-line flags"
    return args, dual_config_from_args(args, source), build_tokenizer(tokenizer_config_from_args(args))


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

