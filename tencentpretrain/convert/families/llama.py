"""The HuggingFace LLaMA family (``model_type: llama``, ``LlamaForCausalLM``) <-> TencentPretrain.

TencentPretrain (like Meta) applies RoPE to adjacent pairs of dimensions (2i, 2i+1); HF applies it to the
halves (i, i + d/2) of each head. HF's conversion script therefore permutes the rows of Q and K within
every head; we undo it on the way in and redo it on the way out. K has ``kv_heads_num`` heads under
grouped-query attention, so it is permuted with that count, not with ``heads_num``.
"""

from __future__ import annotations

from functools import partial

import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.gguf_map import llama_gguf_weight_map
from tencentpretrain.convert.hf_family import GgufArch, HfFamily
from tencentpretrain.convert.weight_map import Rule, Tie, WeightMap

EMBEDDING_KEY, OUTPUT_KEY = "embedding.word.embedding.weight", "target.lm.output_layer.weight"


def permute_for_hf_rope(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Interleaved (Meta/TencentPretrain) rows -> HF rotate_half rows, per head. weight: (heads * D, in)."""
    out_features, in_features = weight.shape
    head_size = out_features // heads
    return (
        weight.view(heads, head_size // 2, 2, in_features)  # (h, D/2, 2, in): pairs (2i, 2i+1)
        .transpose(1, 2)  # (h, 2, D/2, in): halves
        .reshape(out_features, in_features)
    )


def unpermute_from_hf_rope(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """HF rotate_half rows -> interleaved rows; the inverse of ``permute_for_hf_rope``."""
    out_features, in_features = weight.shape
    head_size = out_features // heads
    return (
        weight.view(heads, 2, head_size // 2, in_features)  # (h, 2, D/2, in): halves
        .transpose(1, 2)  # (h, D/2, 2, in): pairs
        .reshape(out_features, in_features)
    )


def llama_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    """The weight map for ``config`` (head counts decide the Q/K permutation; a tied head is left to HF)."""
    q_in = partial(unpermute_from_hf_rope, heads=config.heads_num)
    q_out = partial(permute_for_hf_rope, heads=config.heads_num)
    k_in = partial(unpermute_from_hf_rope, heads=config.kv_heads_num)
    k_out = partial(permute_for_hf_rope, heads=config.kv_heads_num)
    layer, attn, ffn = "model.layers.{}", "encoder.transformer.{}.self_attn", "encoder.transformer.{}.feed_forward"
    rules = [
        Rule("model.embed_tokens.weight", "embedding.word.embedding.weight"),
        Rule(f"{layer}.self_attn.q_proj.weight", f"{attn}.linear_layers.0.weight", q_in, q_out),
        Rule(f"{layer}.self_attn.k_proj.weight", f"{attn}.linear_layers.1.weight", k_in, k_out),
        Rule(f"{layer}.self_attn.v_proj.weight", f"{attn}.linear_layers.2.weight"),
        Rule(f"{layer}.self_attn.o_proj.weight", f"{attn}.final_linear.weight"),
        Rule(f"{layer}.mlp.gate_proj.weight", f"{ffn}.linear_gate.weight"),
        Rule(f"{layer}.mlp.up_proj.weight", f"{ffn}.linear_1.weight"),
        Rule(f"{layer}.mlp.down_proj.weight", f"{ffn}.linear_2.weight"),
        Rule(f"{layer}.input_layernorm.weight", "encoder.transformer.{}.layer_norm_1.weight"),
        Rule(f"{layer}.post_attention_layernorm.weight", "encoder.transformer.{}.layer_norm_2.weight"),
        Rule("model.norm.weight", "encoder.layer_norm.weight"),
        Rule("lm_head.weight", "target.lm.output_layer.weight"),
    ]
    ties = [Tie(OUTPUT_KEY, EMBEDDING_KEY, exported=False)] if config.tie_weights else []
    # rotary_emb.inv_freq is a recomputable buffer that older transformers versions saved.
    return WeightMap("HuggingFace LLaMA", rules, ignored_external=[r"rotary_emb\.inv_freq$"], ties=ties)


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain LLaMA config from an HF ``config.json`` dict: every size comes from the file."""
    from tencentpretrain.errors import ConfigError

    rope = hf.get("rope_parameters") or {}
    theta = hf.get("rope_theta", rope.get("rope_theta", 10000.0))
    scaling = hf.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind != "linear":
            raise ConfigError(f"HF rope_scaling {scaling!r} is not supported (only linear)")
        scaling = {"type": "linear", "factor": float(scaling["factor"])}
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ConfigError("HF LLaMA configs with attention_bias or mlp_bias are not supported")
    hidden = hf["hidden_size"]
    heads = hf["num_attention_heads"]
    head_size = hf.get("head_dim") or hidden // heads
    return ModelConfig(
        emb_size=hidden,
        hidden_size=hidden,
        feedforward_size=hf["intermediate_size"],
        heads_num=heads,
        local_kv_heads_num=hf.get("num_key_value_heads") or heads,
        attention_head_size=head_size if head_size * heads != hidden else None,
        layers_num=hf["num_hidden_layers"],
        vocab_size=hf["vocab_size"],
        max_seq_length=hf.get("max_position_embeddings", 2048),
        hidden_act=hf.get("hidden_act", "silu"),
        dropout=0.0,
        embedding=("word",),
        remove_transformer_bias=True,
        remove_embedding_layernorm=True,
        rotary_position_embedding=True,
        rope_theta=float(theta),
        rope_scaling=scaling,
        encoder="transformer",
        feed_forward="gated",
        mask="causal",
        layernorm_positioning="pre",
        layernorm="rms",
        layernorm_eps=hf.get("rms_norm_eps", 1e-6),
        target=("lm",),
        tie_weights=bool(hf.get("tie_word_embeddings", False)),
    )


def hf_config_from_model_config(
    config: ModelConfig,
    vocab_size: int,
    *,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    dtype: str | None = None,
) -> dict:
    """The HF ``config.json`` dict of a TencentPretrain LLaMA config (true vocab size, KV heads, theta, eps).

    Token ids and ``dtype`` (``"float32"``, ``"bfloat16"``...) are written when given.
    """
    hf = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.feedforward_size,
        "num_hidden_layers": config.layers_num,
        "num_attention_heads": config.heads_num,
        "num_key_value_heads": config.kv_heads_num,
        "head_dim": config.head_size,
        "hidden_act": config.hidden_act,
        "max_position_embeddings": config.max_seq_length,
        "rms_norm_eps": config.layernorm_eps,
        "rope_theta": config.rope_theta,
        "tie_word_embeddings": config.tie_weights,
        "attention_bias": False,
        "mlp_bias": False,
    }
    if config.rope_scaling:
        hf["rope_scaling"] = {"rope_type": "linear", "factor": config.rope_scaling_factor}
    tokens = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    hf.update({k: v for k, v in tokens.items() if v is not None})
    if dtype is not None:
        hf["torch_dtype"] = dtype  # transformers 4.x reads torch_dtype, 5.x reads either
    return hf


FAMILY = HfFamily(
    model_type="llama",
    name="LLaMA",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=llama_hf_weight_map,
    generation_config=True,
    gguf=GgufArch("llama", lambda config: llama_gguf_weight_map()),  # Q and K as they are: interleaved RoPE
)
