"""The HuggingFace Qwen2 family (``model_type: qwen2``, ``Qwen2ForCausalLM``) <-> TencentPretrain.

Qwen2 is LLaMA's architecture (same keys, same RoPE permutation of Q and K, grouped-query attention) with biases
on the Q, K and V projections and none on O (``qkv_bias`` in our config). The Q and K biases live in the same
per-head row order as their weights, so they are permuted like them. The small models (0.5B, 1.5B) tie the output
layer to the word embedding (``tie_word_embeddings``); the tie is kept both ways.

Qwen2's optional sliding-window attention (``use_sliding_window``) is not supported: the released models leave it
off, and a model that uses it is refused rather than run with full attention.

GGUF: llama.cpp's ``qwen2`` architecture rotates the halves of each head (NeoX style, HF's layout), so the GGUF
export writes Q and K (weights and biases) in HF's row order, not in the interleaved order of ``arch=llama``.
"""

from __future__ import annotations

from functools import partial

import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.families import llama
from tencentpretrain.convert.gguf_map import llama_gguf_weight_map
from tencentpretrain.convert.hf_family import GgufArch, HfFamily
from tencentpretrain.convert.weight_map import Rule, WeightMap
from tencentpretrain.errors import ConfigError

ATTENTION = "encoder.transformer.{}.self_attn"
BIASED = (("q_proj", "attn_q", 0), ("k_proj", "attn_k", 1), ("v_proj", "attn_v", 2))  # HF, GGUF, linear_layers.i


def _as_rows(transform, bias: torch.Tensor, heads: int) -> torch.Tensor:
    """Apply a per-head row permutation of a weight to a bias: (heads * D,) viewed as (heads * D, 1)."""
    return transform(bias.unsqueeze(-1), heads=heads).squeeze(-1)


def _rope_transforms(config: ModelConfig, index: int) -> tuple:
    """(to_internal, to_external) of Q (index 0) or K (1) weights and biases: HF rotate_half rows <-> ours."""
    heads = config.heads_num if index == 0 else config.kv_heads_num
    weight = (partial(llama.unpermute_from_hf_rope, heads=heads), partial(llama.permute_for_hf_rope, heads=heads))
    bias = (partial(_as_rows, llama.unpermute_from_hf_rope, heads=heads),
            partial(_as_rows, llama.permute_for_hf_rope, heads=heads))
    return weight, bias


def qwen2_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    """LLaMA's map plus the Q, K, V biases (Q and K permuted like their weights)."""
    base = llama.llama_hf_weight_map(config, hf)
    biases = []
    for hf_name, _, index in BIASED:
        transforms = _rope_transforms(config, index)[1] if index < 2 else ()
        biases.append(Rule(f"model.layers.{{}}.self_attn.{hf_name}.bias",
                           f"{ATTENTION}.linear_layers.{index}.bias", *transforms))
    return WeightMap("HuggingFace Qwen2", [*base.rules, *biases], ignored_external=base.ignored_external,
                     ties=base.ties)


def qwen2_gguf_weight_map(config: ModelConfig) -> WeightMap:
    """GGUF ``arch=qwen2`` names: LLaMA's GGUF names plus the biases, with Q and K in HF's (NeoX) row order."""
    rules = []
    for rule in llama_gguf_weight_map().rules:
        index = next((i for _, gguf_name, i in BIASED[:2] if f".{gguf_name}." in rule.external), None)
        if index is None:
            rules.append(rule)
        else:
            (to_internal, to_external), _ = _rope_transforms(config, index)
            rules.append(Rule(rule.external, rule.internal, to_internal, to_external))
    for _, gguf_name, index in BIASED:
        transforms = _rope_transforms(config, index)[1] if index < 2 else ()
        rules.append(Rule(f"blk.{{}}.{gguf_name}.bias", f"{ATTENTION}.linear_layers.{index}.bias", *transforms))
    return WeightMap("GGUF qwen2", rules)


def _check_no_sliding_window(hf: dict) -> None:
    layer_types = hf.get("layer_types") or []
    sliding = "sliding_attention" in layer_types or (
        hf.get("use_sliding_window") and hf.get("max_window_layers", 0) < hf["num_hidden_layers"])
    if sliding:
        raise ConfigError("HF Qwen2 configs with sliding-window attention (use_sliding_window) are not supported; "
                          "the released Qwen2 models do not use it")


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain config from a Qwen2 ``config.json`` dict: LLaMA's, with Q/K/V biases."""
    _check_no_sliding_window(hf)
    return llama.model_config_from_hf(hf).replace(qkv_bias=True)


def hf_config_from_model_config(config: ModelConfig, vocab_size: int, **tokens) -> dict:
    """The Qwen2 ``config.json`` dict of a TencentPretrain config with Q/K/V biases (no sliding window)."""
    hf = llama.hf_config_from_model_config(config, vocab_size, **tokens)
    for key in ("attention_bias", "mlp_bias"):  # LLaMA-only switches
        hf.pop(key)
    return {**hf, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "use_sliding_window": False,
            "sliding_window": None, "max_window_layers": config.layers_num}


FAMILY = HfFamily(
    model_type="qwen2",
    name="Qwen2",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=qwen2_hf_weight_map,
    generation_config=True,
    gguf=GgufArch("qwen2", qwen2_gguf_weight_map),
)
