"""Sentence-BERT: a sentence-transformers BERT directory (``BertModel`` + a pooling module) <-> the original's
SBERT layout (``models/sbert/*``: ``embedding: ["dual"]``, ``encoder: "dual"``, tied streams), the checkpoint
``finetune/run_classifier_siamese.py --pretrained_model_path`` takes.

The directory's config.json says ``model_type: bert``: the ``convert_sbert_*`` scripts name this family, and
the generic converter picks it for a ``BertModel`` directory (a BERT without heads). Its keys are BertModel's without the ``bert.`` prefix; the pooler
(``pooler.dense``, which sentence-transformers never runs) is not converted and the export writes none. The
pooling comes from ``1_Pooling/config.json`` (``pooling_mode_cls_token`` -> ``first``, ``mean_tokens`` ->
``mean``, ``max_tokens`` -> ``max``, ``lasttoken`` -> ``last``; mean when there is none) and goes back there on
export, with ``modules.json``; a ``Normalize`` module (unit-length vectors) is noted and not kept, other modules
(``Dense``...) are refused.

Tied streams store every tensor under both stream names (``embedding.dual.embedding_{0,1}``,
``encoder.encoder_{0,1}``): one HF tensor becomes both on import, and the export checks that they are equal.
The original applies two LayerNorms to each stream's embedding (the stack's ``layer_norm``, then
``stream_i_layer_norm``); HF has one. HF's goes to ``stream_i_layer_norm`` and the first is the identity (gamma 1,
beta 0): a LayerNorm of an already normalised vector with unit weights changes it by O(eps). A model whose first
LayerNorm is not the identity (trained as the original's dual model) is refused by the export.
"""

from __future__ import annotations

import json
import logging
import os

import torch

from tencentpretrain.atomic import write_json
from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.families import bert
from tencentpretrain.convert.hf_family import HfFamily, HfHead
from tencentpretrain.convert.weight_map import Fused, WeightMap
from tencentpretrain.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

POOLING_MODES = {"pooling_mode_cls_token": "first", "pooling_mode_mean_tokens": "mean",
                 "pooling_mode_max_tokens": "max", "pooling_mode_lasttoken": "last"}
UNSUPPORTED_POOLING = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")
POOLING_KEY = "sentence_transformers_pooling"  # where read_extra_config puts the pooling (not in config.json)
TRANSFORMER, POOLING, NORMALIZE = (f"sentence_transformers.models.{m}" for m in ("Transformer", "Pooling",
                                                                                  "Normalize"))
STREAMS = (0, 1)
EMBEDDING = "embedding.dual"


# ---------------------------------------------------------------------------------------------- tensors
def _both(tensor: torch.Tensor) -> list[torch.Tensor]:
    return [tensor, tensor]


def _one_of_both(parts) -> torch.Tensor:
    first, second = parts
    if not torch.equal(first, second):
        raise CheckpointError("the two streams of this SBERT checkpoint differ (tie_weights is off, or the streams "
                              "were trained apart); an HF sentence-transformers model has one encoder")
    return first


def _stream_norm_split(fill):
    """HF's embedding LayerNorm tensor -> [stream_0 norm, stream_1 norm, stack norm 0, stack norm 1]."""
    return lambda tensor: [tensor, tensor, fill(tensor), fill(tensor)]


def _stream_norm_join(identity: float):
    def join(parts) -> torch.Tensor:
        if any(not torch.all(p == identity) for p in parts[2:]):
            raise CheckpointError("this SBERT checkpoint's stream embeddings have a LayerNorm before "
                                  "stream_{0,1}_layer_norm that is not the identity (the original's two LayerNorms): "
                                  "HF BertModel has one embedding LayerNorm and cannot compute it")
        return _one_of_both(parts[:2])
    return join


def _twice(external: str, internal: str, split=_both, join=_one_of_both) -> Fused:
    """One HF tensor <-> the same tensor under both streams' names (``internal`` has a ``#`` for the stream)."""
    return Fused(external, tuple(internal.replace("#", str(i)) for i in STREAMS), split, join)


def _with_padding_segment(tensor: torch.Tensor) -> list[torch.Tensor]:
    return _both(bert._add_padding_segment(tensor))


def _without_padding_segment(parts) -> torch.Tensor:
    return bert._drop_padding_segment(_one_of_both(parts))


def sbert_weight_map(hf: dict | None = None) -> WeightMap:
    """BertModel keys <-> the dual SBERT keys of both streams."""
    fused = [
        _twice("embeddings.word_embeddings.weight", f"{EMBEDDING}.embedding_#.word.embedding.weight"),
        _twice("embeddings.position_embeddings.weight", f"{EMBEDDING}.embedding_#.pos.embedding.weight"),
        _twice("embeddings.token_type_embeddings.weight", f"{EMBEDDING}.embedding_#.seg.embedding.weight",
               _with_padding_segment, _without_padding_segment),
    ]
    for hf_name, ours, identity in (("weight", "gamma", 1.0), ("bias", "beta", 0.0)):
        internals = (*(f"{EMBEDDING}.stream_{i}_layer_norm.{ours}" for i in STREAMS),
                     *(f"{EMBEDDING}.embedding_{i}.layer_norm.{ours}" for i in STREAMS))
        fill = torch.ones_like if identity else torch.zeros_like
        fused.append(Fused(f"embeddings.LayerNorm.{hf_name}", internals, _stream_norm_split(fill),
                           _stream_norm_join(identity)))
    for rule in bert._backbone_rules():
        if rule.external.startswith("bert.encoder."):
            internal = rule.internal.replace("encoder.transformer.", "encoder.encoder_#.transformer.")
            fused.append(_twice(rule.external.removeprefix("bert."), internal))
    return WeightMap("HuggingFace sentence-transformers BERT", [], ignored_external=[*bert.IGNORED, r"^pooler\."],
                     fused=fused)


# The pooling model: no parameters of its own (the checkpoint is the embedding and encoder).
HEADS = (HfHead("BertModel", ()),)


# ---------------------------------------------------------------------------------------------- configs
STREAM = {"embedding": ["word", "pos", "seg"], "encoder": "transformer", "mask": "fully_visible"}  # BERT's


def model_config_from_hf(hf: dict) -> ModelConfig:
    """The dual (tied streams) config of a sentence-transformers BERT config.json dict (+ its pooling)."""
    single = bert.model_config_from_hf({**hf, "architectures": ["BertForMaskedLM"]})
    return single.replace(embedding=("dual",), encoder="dual", stream_0=dict(STREAM), stream_1=dict(STREAM),
                          tie_weights=True, pooling=hf.get(POOLING_KEY, "mean"), target=("clr",))


def hf_config_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """The BertModel config.json dict of a dual SBERT config (its stream 0, which is stream 1)."""
    if not config.is_dual:
        raise ConfigError("not a two-stream (dual) config: an SBERT export needs the original's sbert layout "
                          "(models/sbert/*); a single BERT is exported with the bert scripts")
    stream = config.streams[0]
    hf = bert.hf_config_from_model_config(stream.replace(target=("mlm",)), vocab_size)
    hf.pop("tie_word_embeddings")
    return {**hf, "architectures": ["BertModel"]}


# ---------------------------------------------------------------------------------------------- the other files
def _read_json(path: str) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None


def _pooling_from(path: str) -> str:
    spec = _read_json(path)
    unsupported = [k for k in UNSUPPORTED_POOLING if spec.get(k)]
    chosen = [mode for key, mode in POOLING_MODES.items() if spec.get(key)]
    if unsupported or len(chosen) != 1:
        raise ConfigError(f"{path}: pooling {unsupported + chosen or 'none'} is not supported; one of "
                          f"{', '.join(POOLING_MODES)} must be true (TencentPretrain pools one way)")
    return chosen[0]


def read_sentence_transformers_config(directory: str) -> dict:
    """{POOLING_KEY: first|mean|max|last} from modules.json and the pooling module's config.json."""
    modules_path = os.path.join(directory, "modules.json")
    modules = _read_json(modules_path) if os.path.isfile(modules_path) else [
        {"type": TRANSFORMER, "path": ""}, {"type": POOLING, "path": "1_Pooling"}]
    pooling_dirs = [m.get("path", "") for m in modules if m.get("type") == POOLING]
    others = [m.get("type") for m in modules if m.get("type") not in (TRANSFORMER, POOLING, NORMALIZE)]
    if others:
        raise ConfigError(f"{modules_path}: modules {others} are not supported (an SBERT model is a BERT and "
                          "its pooling)")
    if any(m.get("type") == NORMALIZE for m in modules):
        logger.warning("%s: the Normalize module is not converted: the pooled vectors are not scaled to unit "
                       "length (cosine similarities are unchanged)", modules_path)
    pooling_config = os.path.join(directory, pooling_dirs[0] if pooling_dirs else "1_Pooling", "config.json")
    return {POOLING_KEY: _pooling_from(pooling_config) if os.path.isfile(pooling_config) else "mean"}


def write_sentence_transformers_files(directory: str, config: ModelConfig) -> None:
    """modules.json, 1_Pooling/config.json (the config's pooling) and sentence_bert_config.json."""
    modes = {mode: key for key, mode in POOLING_MODES.items()}
    if config.pooling not in modes:
        raise ConfigError(f"pooling {config.pooling!r} has no sentence-transformers equivalent")
    write_json(os.path.join(directory, "modules.json"), [
        {"idx": 0, "name": "0", "path": "", "type": TRANSFORMER},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING}])
    os.makedirs(os.path.join(directory, "1_Pooling"), exist_ok=True)
    pooling = {"word_embedding_dimension": config.hidden_size,
               **{key: key == modes[config.pooling] for key in POOLING_MODES},
               **dict.fromkeys(UNSUPPORTED_POOLING, False)}
    write_json(os.path.join(directory, "1_Pooling", "config.json"), pooling)
    write_json(os.path.join(directory, "sentence_bert_config.json"),
               {"max_seq_length": config.max_seq_length, "do_lower_case": False})


FAMILY = HfFamily(
    model_type="sbert",
    name="SBERT",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=lambda config, hf=None: sbert_weight_map(hf),
    heads=HEADS,
    backbone_map=sbert_weight_map,
    hf_model_type="bert",
    default_head="BertModel",
    read_extra_config=read_sentence_transformers_config,
    write_extra_files=write_sentence_transformers_files,
)
