"""The HuggingFace XLM-RoBERTa family (``model_type: xlm-roberta``, ``XLMRobertaForMaskedLM``) <-> TencentPretrain.

XLM-R is RoBERTa's architecture under RoBERTa's key names (``roberta.*``, ``lm_head.*``), with the same position
offset (positions of real tokens start at ``padding_idx + 1 = 2``) and one token type; see ``families/roberta.py``.
What differs is the vocabulary (250,002 SentencePiece-based ids, shifted by fairseq's offset: the tokenizer's
concern, ``--tokenizer xlmroberta``), not the weights.
"""

from __future__ import annotations

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.families import roberta
from tencentpretrain.convert.hf_family import HfFamily
from tencentpretrain.convert.weight_map import WeightMap


def xlm_roberta_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    base = roberta.roberta_hf_weight_map(config, hf)
    return WeightMap("HuggingFace XLM-RoBERTa", base.rules, ignored_external=base.ignored_external, ties=base.ties)


def hf_config_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """The HF ``config.json`` dict of a TencentPretrain config converted from XLM-RoBERTa."""
    hf = roberta.hf_config_from_model_config(config, vocab_size)
    return {**hf, "architectures": ["XLMRobertaForMaskedLM"], "model_type": "xlm-roberta"}


FAMILY = HfFamily(
    model_type="xlm-roberta",
    name="XLM-RoBERTa",
    config_from_hf=roberta.model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=xlm_roberta_hf_weight_map,
)
