"""The HuggingFace T5 family (``model_type: t5``, ``T5ForConditionalGeneration``) <-> TencentPretrain.

T5 is pre-norm with T5's RMS norm, no biases and no attention scale; its relative position bias lives in the
first block of HF's encoder and decoder and maps to ``encoder.relative_pos_emb`` / ``decoder.self_pos_emb``.
Both feed-forward variants are supported: T5 v1.0 ``relu`` (``dense``: wi, wo) and v1.1 ``gated-gelu``
(``gated``: wi_0 = gate, wi_1 = linear_1, wo = linear_2).

Tied head: T5 v1.0 multiplies the decoder output by ``d_model ** -0.5`` before the head (HF says so with
``tie_word_embeddings`` in transformers 4 configs, ``scale_decoder_outputs`` in transformers 5, which always
ties ``lm_head`` to ``shared``; a transformers 5 model therefore cannot hold a head different from the
embedding, so an untied export only round-trips exactly through transformers 4 or when the head equals it). The converted model keeps the embeddings shared (``share_embedding``) and stores the head
untied as ``shared * d_model ** -0.5``, which gives the same logits without a T5-only scaling in our lm target;
the reverse direction writes an untied HF model (``tie_word_embeddings: false``).
"""

from __future__ import annotations

from functools import partial

import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.hf_family import HfFamily
from tencentpretrain.convert.weight_map import Rule, Tie, WeightMap
from tencentpretrain.errors import ConfigError

HF_ACTIVATIONS = {"relu": "relu", "gelu_new": "gelu_fast", "gelu": "gelu", "silu": "silu"}


def _attention_rules(hf_prefix: str, tp_prefix: str) -> list[Rule]:
    return [
        Rule(f"{hf_prefix}.{hf}.weight", f"{tp_prefix}.{tp}.weight")
        for hf, tp in (("q", "linear_layers.0"), ("k", "linear_layers.1"), ("v", "linear_layers.2"), ("o", "final_linear"))
    ]


def _ffn_rules(hf_prefix: str, tp_prefix: str, gated: bool) -> list[Rule]:
    pairs = [("wi_0", "linear_gate"), ("wi_1", "linear_1")] if gated else [("wi", "linear_1")]
    return [Rule(f"{hf_prefix}.{hf}.weight", f"{tp_prefix}.{tp}.weight") for hf, tp in pairs + [("wo", "linear_2")]]


def _scale(w: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
    return w * factor if factor != 1.0 else w


def t5_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    """The map for ``config``; ``hf`` (config.json) says whether HF scales the decoder output before its head."""
    head_in = partial(_scale, factor=hf["d_model"] ** -0.5 if hf and scales_decoder_output(hf) else 1.0)
    gated = config.feed_forward == "gated"
    enc, dec = "encoder.block.{}.layer", "decoder.block.{}.layer"
    tenc, tdec = "encoder.transformer.{}", "decoder.transformer_decoder.{}"
    rules = [
        Rule("shared.weight", "embedding.word.embedding.weight", aliases=("encoder.embed_tokens.weight",)),
        Rule("decoder.embed_tokens.weight", "tgt_embedding.word.embedding.weight"),
        Rule("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
             "encoder.relative_pos_emb.relative_attention_bias.weight"),
        Rule("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
             "decoder.self_pos_emb.relative_attention_bias.weight"),
        *_attention_rules(f"{enc}.0.SelfAttention", f"{tenc}.self_attn"),
        Rule(f"{enc}.0.layer_norm.weight", f"{tenc}.layer_norm_1.weight"),
        *_ffn_rules(f"{enc}.1.DenseReluDense", f"{tenc}.feed_forward", gated),
        Rule(f"{enc}.1.layer_norm.weight", f"{tenc}.layer_norm_2.weight"),
        Rule("encoder.final_layer_norm.weight", "encoder.layer_norm.weight"),
        *_attention_rules(f"{dec}.0.SelfAttention", f"{tdec}.self_attn"),
        Rule(f"{dec}.0.layer_norm.weight", f"{tdec}.layer_norm_1.weight"),
        *_attention_rules(f"{dec}.1.EncDecAttention", f"{tdec}.context_attn"),
        Rule(f"{dec}.1.layer_norm.weight", f"{tdec}.layer_norm_2.weight"),
        *_ffn_rules(f"{dec}.2.DenseReluDense", f"{tdec}.feed_forward", gated),
        Rule(f"{dec}.2.layer_norm.weight", f"{tdec}.layer_norm_3.weight"),
        Rule("decoder.final_layer_norm.weight", "decoder.layer_norm.weight"),
        Rule("lm_head.weight", "target.lm.output_layer.weight", head_in),
    ]
    ties = [  # what a tied HF T5 leaves out of its file
        Tie("tgt_embedding.word.embedding.weight", "embedding.word.embedding.weight"),
        Tie("target.lm.output_layer.weight", "embedding.word.embedding.weight", head_in),
    ]
    return WeightMap("HuggingFace T5", rules, ties=ties)


def scales_decoder_output(hf_config: dict) -> bool:
    """Whether HF multiplies the decoder output by ``d_model ** -0.5``: transformers 5 says so with
    ``scale_decoder_outputs``; saved configs of transformers 4 with ``tie_word_embeddings`` (default true)."""
    return bool(hf_config.get("scale_decoder_outputs", hf_config.get("tie_word_embeddings", True)))


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain T5 config from an HF ``config.json`` dict."""
    proj = hf.get("feed_forward_proj", "relu")
    gated = proj.startswith("gated-")
    act = proj[len("gated-"):] if gated else proj
    act = {"gelu": "gelu_new"}.get(act, act) if gated else act  # HF maps gated-gelu to gelu_new
    if act not in HF_ACTIVATIONS:
        raise ConfigError(f"HF T5 feed_forward_proj {proj!r} is not supported")
    if hf.get("relative_attention_max_distance", 128) != 128:
        raise ConfigError("only relative_attention_max_distance = 128 is supported")
    d_model, heads, d_kv = hf["d_model"], hf["num_heads"], hf["d_kv"]
    return ModelConfig(
        emb_size=d_model, hidden_size=d_model, feedforward_size=hf["d_ff"], heads_num=heads,
        attention_head_size=d_kv if d_kv * heads != d_model else None, layers_num=hf["num_layers"],
        decoder_layers_num=hf.get("num_decoder_layers") or hf["num_layers"], vocab_size=hf["vocab_size"],
        max_seq_length=hf.get("n_positions", 512), hidden_act=HF_ACTIVATIONS[act], dropout=hf.get("dropout_rate", 0.1),
        embedding=("word",), tgt_embedding=("word",), remove_embedding_layernorm=True, remove_transformer_bias=True,
        remove_attention_scale=True, relative_position_embedding=True,
        relative_attention_buckets_num=hf.get("relative_attention_num_buckets", 32), encoder="transformer",
        decoder="transformer", mask="fully_visible", layernorm_positioning="pre", layernorm="t5",
        layernorm_eps=hf.get("layer_norm_epsilon", 1e-6), feed_forward="gated" if gated else "dense",
        target=("lm",), share_embedding=True, tie_weights=False,
    )


def hf_config_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """The HF ``config.json`` dict of a TencentPretrain T5 config (always an untied head, see the module doc)."""
    acts = {v: k for k, v in HF_ACTIVATIONS.items()}
    act = acts[config.hidden_act]
    gated = config.feed_forward == "gated"
    proj = ("gated-gelu" if act == "gelu_new" else f"gated-{act}") if gated else act
    return {
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": vocab_size,
        "d_model": config.hidden_size, "d_kv": config.head_size, "d_ff": config.feedforward_size,
        "num_heads": config.heads_num, "num_layers": config.layers_num,
        "num_decoder_layers": config.decoder_layers_num or config.layers_num,
        "relative_attention_num_buckets": config.relative_attention_buckets_num,
        "relative_attention_max_distance": 128, "dropout_rate": config.dropout,
        "layer_norm_epsilon": config.layernorm_eps, "feed_forward_proj": proj, "tie_word_embeddings": False,
        "is_encoder_decoder": True, "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
    }


FAMILY = HfFamily(
    model_type="t5",
    name="T5",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=t5_hf_weight_map,
    generation_config=True,
)
