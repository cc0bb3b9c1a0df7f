"""The HuggingFace Mistral family (``model_type: mistral``, ``MistralForCausalLM``) <-> TencentPretrain.

Mistral is LLaMA's architecture (same keys, same RoPE permutation, grouped-query attention) plus a sliding
attention window. Within the window, sliding-window attention is full causal attention, so a converted model's
context (``max_seq_length``) is capped at ``sliding_window``; exports write no window (``sliding_window: null``,
as Mistral v0.2 and later do). Everything else is the LLaMA family's.
"""

from __future__ import annotations

import dataclasses

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.families import llama
from tencentpretrain.convert.hf_family import HfFamily


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain config from a Mistral ``config.json`` dict: LLaMA's, with the context capped at the window."""
    config = llama.model_config_from_hf(hf)
    window = hf.get("sliding_window")
    if window and window < config.max_seq_length:
        config = dataclasses.replace(config, max_seq_length=window)
    return config


def hf_config_from_model_config(config: ModelConfig, vocab_size: int, **tokens) -> dict:
    """The Mistral ``config.json`` dict of a TencentPretrain LLaMA-architecture config (no sliding window)."""
    hf = llama.hf_config_from_model_config(config, vocab_size, **tokens)
    for key in ("attention_bias", "mlp_bias"):  # LLaMA-only switches (always off here)
        hf.pop(key)
    return {**hf, "architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": None}


FAMILY = HfFamily(
    model_type="mistral",
    name="Mistral",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=llama.llama_hf_weight_map,
    generation_config=True,
)
