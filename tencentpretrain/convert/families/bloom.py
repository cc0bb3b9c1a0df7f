"""The HuggingFace BLOOM family (``model_type: bloom``, ``BloomForCausalLM``) <-> TencentPretrain.

BLOOM is a pre-norm decoder with biases everywhere, no position table (ALiBi: ``alibi_position_embedding``), a
LayerNorm right after the word embedding (``word_embeddings_layernorm``: our ``embedding.layer_norm``), the tanh
GELU (``gelu_fast``) and an output layer tied to the word embedding. HF's LayerNorm is the standard one, so
converted configs select ``layernorm: "standard"``.

HF fuses Q, K and V into one ``query_key_value`` whose output rows are interleaved per head: viewed as
(heads, 3, head_dim, hidden), head h's Q, K and V rows follow each other (a ``Fused`` entry of the map), unlike
GPT-2's [Q | K | V] blocks.

The original's ``models/bloom/*`` configs differ from HF BLOOM in three computed fields (no embedding LayerNorm,
the exact GELU, the original's LayerNorm), so a model trained from them is refused by the HF export. HF's
``apply_residual_connection_post_layernorm`` variant is refused. BLOOM has no maximum length; ``seq_length``
(written by the export) or 2048, the length BLOOM was trained with, becomes ``max_seq_length``.
"""

from __future__ import annotations

import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.hf_family import HfFamily
from tencentpretrain.convert.weight_map import Fused, Rule, Tie, WeightMap
from tencentpretrain.errors import ConfigError

PARTS = 3  # Q, K, V
TRAINED_LENGTH = 2048
WORD = "embedding.word.embedding.weight"


def _split_qkv(fused: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """(heads * 3 * D, ...) per-head interleaved rows -> [Q, K, V], each (heads * D, ...)."""
    per_head = fused.reshape(heads, PARTS, -1, *fused.shape[1:])  # (heads, 3, D, ...)
    return [per_head[:, i].reshape(-1, *fused.shape[1:]).contiguous() for i in range(PARTS)]


def _join_qkv(parts, heads: int) -> torch.Tensor:
    """[Q, K, V], each (heads * D, ...) -> (heads * 3 * D, ...) interleaved per head."""
    rest = parts[0].shape[1:]
    per_head = torch.stack([p.reshape(heads, -1, *rest) for p in parts], dim=1)  # (heads, 3, D, ...)
    return per_head.reshape(-1, *rest).contiguous()


def _pair(external: str, internal: str, norm: bool = False) -> list[Rule]:
    names = (("weight", "gamma"), ("bias", "beta")) if norm else (("weight", "weight"), ("bias", "bias"))
    return [Rule(f"{external}.{hf}", f"{internal}.{ours}") for hf, ours in names]


def bloom_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    layer, tp = "transformer.h.{}", "encoder.transformer.{}"
    heads = config.heads_num
    rules = [
        Rule("transformer.word_embeddings.weight", WORD),
        *_pair("transformer.word_embeddings_layernorm", "embedding.layer_norm", norm=True),
        *_pair(f"{layer}.input_layernorm", f"{tp}.layer_norm_1", norm=True),
        *_pair(f"{layer}.self_attention.dense", f"{tp}.self_attn.final_linear"),
        *_pair(f"{layer}.post_attention_layernorm", f"{tp}.layer_norm_2", norm=True),
        *_pair(f"{layer}.mlp.dense_h_to_4h", f"{tp}.feed_forward.linear_1"),
        *_pair(f"{layer}.mlp.dense_4h_to_h", f"{tp}.feed_forward.linear_2"),
        *_pair("transformer.ln_f", "encoder.layer_norm", norm=True),
        Rule("lm_head.weight", "target.lm.output_layer.weight"),
    ]
    qkv = tuple(f"{tp}.self_attn.linear_layers.{i}" for i in range(PARTS))
    fused = [Fused(f"{layer}.self_attention.query_key_value.{p}", tuple(f"{q}.{p}" for q in qkv),
                   lambda w: _split_qkv(w, heads), lambda parts: _join_qkv(parts, heads))
             for p in ("weight", "bias")]
    # save_pretrained leaves a tied lm_head out of the file: import restores it, export leaves it out
    ties = [Tie("target.lm.output_layer.weight", WORD, exported=False)] if config.tie_weights else []
    return WeightMap("HuggingFace BLOOM", rules, fused=fused, ties=ties)


def _check_supported(hf: dict) -> None:
    if hf.get("apply_residual_connection_post_layernorm"):
        raise ConfigError("HF BLOOM with apply_residual_connection_post_layernorm (the residual taken after the "
                          "LayerNorm) is not supported")


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain BLOOM config from an HF ``config.json`` dict."""
    _check_supported(hf)
    hidden = hf.get("hidden_size", hf.get("n_embed"))
    return ModelConfig(
        emb_size=hidden, hidden_size=hidden, feedforward_size=4 * hidden, heads_num=hf.get("n_head", hf.get(
            "num_attention_heads")), layers_num=hf.get("n_layer", hf.get("num_hidden_layers")),
        vocab_size=hf["vocab_size"], max_seq_length=hf.get("seq_length", TRAINED_LENGTH), hidden_act="gelu_fast",
        dropout=hf.get("hidden_dropout", 0.0), embedding=("word",), remove_embedding_layernorm=False,
        encoder="transformer", mask="causal", layernorm_positioning="pre", layernorm="standard",
        layernorm_eps=hf.get("layer_norm_epsilon", 1e-5), feed_forward="dense", target=("lm",),
        tie_weights=bool(hf.get("tie_word_embeddings", True)), has_lmtarget_bias=False,
        alibi_position_embedding=True, layer_number_scale=True,  # as the original's models/bloom configs
    )


def hf_config_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """The HF ``config.json`` dict of a TencentPretrain BLOOM config."""
    return {
        "architectures": ["BloomForCausalLM"], "model_type": "bloom", "vocab_size": vocab_size,
        "hidden_size": config.hidden_size, "n_layer": config.layers_num, "n_head": config.heads_num,
        "layer_norm_epsilon": config.layernorm_eps, "hidden_dropout": config.dropout,
        "attention_dropout": config.dropout, "apply_residual_connection_post_layernorm": False,
        "seq_length": config.max_seq_length, "tie_word_embeddings": config.tie_weights,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3,
    }


FAMILY = HfFamily(
    model_type="bloom",
    name="BLOOM",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=bloom_hf_weight_map,
    generation_config=True,
)
