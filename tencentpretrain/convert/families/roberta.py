"""The HuggingFace RoBERTa family (``model_type: roberta``, ``RobertaForMaskedLM``): BERT's map, three differences.

* Names: ``roberta.`` instead of ``bert.``, and the MLM head is ``lm_head.{dense,layer_norm,decoder}``.
* Positions: HF RoBERTa numbers the positions of real tokens from ``padding_idx + 1 = 2``, so its table has two
  rows more than the sequence length (``max_position_embeddings`` 514 for 512 tokens). Our positions start at 0:
  rows ``2:`` become ours, and the two leading rows (unused by real tokens) are written back as zeros.
* Segments: RoBERTa has one token type. It becomes both of our segment rows (1 and 2; row 0 is padding), so a
  sentence pair keeps RoBERTa's embedding; converting back takes row 1.

(Chinese "RoBERTa-wwm" checkpoints are BERT-architecture models: convert those with the BERT converter.)
"""

from __future__ import annotations

import dataclasses

import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.families import bert as bert_hf
from tencentpretrain.convert.hf_family import HfFamily
from tencentpretrain.convert.weight_map import Rule, WeightMap
from tencentpretrain.errors import ConfigError

POSITION_OFFSET = 2  # padding_idx + 1
BERT_TO_ROBERTA_NAMES = (
    ("bert.", "roberta."),
    ("cls.predictions.transform.dense.", "lm_head.dense."),
    ("cls.predictions.transform.LayerNorm.", "lm_head.layer_norm."),
    ("cls.predictions.decoder.", "lm_head.decoder."),
    ("cls.predictions.bias", "lm_head.bias"),
)


def _drop_offset_rows(w: torch.Tensor) -> torch.Tensor:  # (P + 2, H) -> (P, H)
    return w[POSITION_OFFSET:].contiguous()


def _add_offset_rows(w: torch.Tensor) -> torch.Tensor:  # (P, H) -> (P + 2, H)
    return torch.cat([torch.zeros_like(w[:POSITION_OFFSET]), w], dim=0)


def _type_to_segments(w: torch.Tensor) -> torch.Tensor:  # (1, H) -> (3, H): padding, A, B
    return torch.cat([torch.zeros_like(w), w, w], dim=0)


def _segments_to_type(w: torch.Tensor) -> torch.Tensor:  # (3, H) -> (1, H)
    return w[1:2].contiguous()


def _roberta_name(bert_name: str) -> str:
    for old, new in BERT_TO_ROBERTA_NAMES:
        if bert_name.startswith(old):
            return new + bert_name[len(old):]
    return bert_name


def roberta_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    special = {
        "embedding.pos.embedding.weight": (_drop_offset_rows, _add_offset_rows),
        "embedding.seg.embedding.weight": (_type_to_segments, _segments_to_type),
    }
    bert = bert_hf.bert_hf_weight_map(config, hf)
    rules = []
    for rule in bert.rules:
        to_internal, to_external = special.get(rule.internal, (rule.to_internal, rule.to_external))
        aliases = tuple(_roberta_name(a) for a in rule.aliases)
        rules.append(Rule(_roberta_name(rule.external), rule.internal, to_internal, to_external, aliases))
    return WeightMap("HuggingFace RoBERTa", rules, ignored_external=[r"\.position_ids$"], ties=bert.ties)


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain config from an HF RoBERTa ``config.json`` dict."""
    if hf.get("type_vocab_size", 1) != 1:
        raise ConfigError(f"HF RoBERTa type_vocab_size must be 1, got {hf['type_vocab_size']}")
    if hf.get("pad_token_id", 1) + 1 != POSITION_OFFSET:
        raise ConfigError(f"HF RoBERTa pad_token_id must be 1 (positions start at 2), got {hf['pad_token_id']}")
    bert_like = {**hf, "type_vocab_size": 2, "architectures": ["BertForMaskedLM"],
                 "max_position_embeddings": hf["max_position_embeddings"] - POSITION_OFFSET}
    return bert_hf.model_config_from_hf(bert_like)


def hf_config_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """The HF ``config.json`` dict of a TencentPretrain config converted from RoBERTa."""
    if "sp" in config.target:
        raise ConfigError("RoBERTa has no next-sentence head: convert an mlm-only model")
    hf = bert_hf.hf_config_from_model_config(dataclasses.replace(config, target=("mlm",)), vocab_size)
    return {**hf, "architectures": ["RobertaForMaskedLM"], "model_type": "roberta", "type_vocab_size": 1,
            "max_position_embeddings": config.max_seq_length + POSITION_OFFSET, "pad_token_id": 1,
            "bos_token_id": 0, "eos_token_id": 2}


FAMILY = HfFamily(
    model_type="roberta",
    name="RoBERTa",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=roberta_hf_weight_map,
)
