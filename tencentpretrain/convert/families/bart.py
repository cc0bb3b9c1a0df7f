"""The HuggingFace BART family (``model_type: bart``, ``BartForConditionalGeneration``) <-> TencentPretrain.

BART is a post-norm encoder-decoder with learned positions, a LayerNorm after the embeddings of each side and
biases everywhere; in our config: ``embedding`` and ``tgt_embedding`` ``["word", "pos"]``, ``decoder:
"transformer"``, ``layernorm: "standard"`` (HF's), ``share_embedding`` (one word table for both sides) and a tied
head with a bias (``has_lmtarget_bias``: HF's ``final_logits_bias`` buffer, shape (1, V)).

Positions: HF numbers them from 2 (``BartLearnedPositionalEmbedding``'s offset), so its tables have two rows
more than the sequence length; rows ``2:`` become ours, and the two leading rows (never read) are written back as
zeros. The word table is stored under up to three names (``model.shared``, the encoder's and the decoder's
``embed_tokens``) and the head may be left out when tied: the map reads whichever is present (aliases, ties).

Refused: ``scale_embedding`` (embeddings multiplied by sqrt(d_model)), different encoder and decoder widths or
head counts, and mBART's pre-norm variant (``normalize_before`` / ``add_final_layer_norm``).
"""

from __future__ import annotations

import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.hf_family import HfFamily
from tencentpretrain.convert.weight_map import Rule, Tie, WeightMap
from tencentpretrain.errors import ConfigError

POSITION_OFFSET = 2
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_fast", "relu": "relu", "silu": "silu"}
WORD = "embedding.word.embedding.weight"


def _drop_offset_rows(w: torch.Tensor) -> torch.Tensor:  # (P + 2, H) -> (P, H)
    return w[POSITION_OFFSET:].contiguous()


def _add_offset_rows(w: torch.Tensor) -> torch.Tensor:  # (P, H) -> (P + 2, H)
    return torch.cat([torch.zeros_like(w[:POSITION_OFFSET]), w], dim=0)


def _squeeze_row(b: torch.Tensor) -> torch.Tensor:  # final_logits_bias (1, V) -> (V,)
    return b.reshape(-1).contiguous()


def _unsqueeze_row(b: torch.Tensor) -> torch.Tensor:  # (V,) -> (1, V)
    return b.reshape(1, -1).contiguous()


def _pair(external: str, internal: str, norm: bool = False) -> list[Rule]:
    names = (("weight", "gamma"), ("bias", "beta")) if norm else (("weight", "weight"), ("bias", "bias"))
    return [Rule(f"{external}.{hf}", f"{internal}.{ours}") for hf, ours in names]


def _attention(external: str, internal: str) -> list[Rule]:
    parts = (("q_proj", "linear_layers.0"), ("k_proj", "linear_layers.1"), ("v_proj", "linear_layers.2"),
             ("out_proj", "final_linear"))
    return [rule for hf, ours in parts for rule in _pair(f"{external}.{hf}", f"{internal}.{ours}")]


def _side_rules(side: str, embedding: str) -> list[Rule]:
    """The positions and the embedding LayerNorm of the ``encoder`` or ``decoder``."""
    return [Rule(f"model.{side}.embed_positions.weight", f"{embedding}.pos.embedding.weight", _drop_offset_rows,
                 _add_offset_rows),
            *_pair(f"model.{side}.layernorm_embedding", f"{embedding}.layer_norm", norm=True)]


def encoder_decoder_rules() -> list[Rule]:
    """The rules BART and Pegasus share: the word tables, every encoder and decoder layer, the head and its bias."""
    enc, dec = "model.encoder.layers.{}", "model.decoder.layers.{}"
    tenc, tdec = "encoder.transformer.{}", "decoder.transformer_decoder.{}"
    return [
        Rule("model.shared.weight", WORD, aliases=("model.encoder.embed_tokens.weight",)),
        Rule("model.decoder.embed_tokens.weight", "tgt_embedding.word.embedding.weight"),
        *_attention(f"{enc}.self_attn", f"{tenc}.self_attn"),
        *_pair(f"{enc}.self_attn_layer_norm", f"{tenc}.layer_norm_1", norm=True),
        *_pair(f"{enc}.fc1", f"{tenc}.feed_forward.linear_1"),
        *_pair(f"{enc}.fc2", f"{tenc}.feed_forward.linear_2"),
        *_pair(f"{enc}.final_layer_norm", f"{tenc}.layer_norm_2", norm=True),
        *_attention(f"{dec}.self_attn", f"{tdec}.self_attn"),
        *_pair(f"{dec}.self_attn_layer_norm", f"{tdec}.layer_norm_1", norm=True),
        *_attention(f"{dec}.encoder_attn", f"{tdec}.context_attn"),
        *_pair(f"{dec}.encoder_attn_layer_norm", f"{tdec}.layer_norm_2", norm=True),
        *_pair(f"{dec}.fc1", f"{tdec}.feed_forward.linear_1"),
        *_pair(f"{dec}.fc2", f"{tdec}.feed_forward.linear_2"),
        *_pair(f"{dec}.final_layer_norm", f"{tdec}.layer_norm_3", norm=True),
        Rule("lm_head.weight", "target.lm.output_layer.weight"),
        Rule("final_logits_bias", "target.lm.output_layer.bias", _squeeze_row, _unsqueeze_row),
    ]


def shared_table_ties(hf: dict | None) -> list[Tie]:
    """The tables a tied HF BART or Pegasus leaves out of its file: the decoder's words, and the head if tied."""
    ties = [Tie("tgt_embedding.word.embedding.weight", WORD)]
    if (hf or {}).get("tie_word_embeddings", True):
        ties.append(Tie("target.lm.output_layer.weight", WORD))
    return ties


def bart_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    rules = [*encoder_decoder_rules(), *_side_rules("encoder", "embedding"), *_side_rules("decoder", "tgt_embedding")]
    return WeightMap("HuggingFace BART", rules, ties=shared_table_ties(hf))


def _check_supported(hf: dict) -> None:
    if hf.get("scale_embedding"):
        raise ConfigError("HF BART with scale_embedding (embeddings times sqrt(d_model)) is not supported")
    if hf.get("normalize_before") or hf.get("add_final_layer_norm"):
        raise ConfigError("pre-norm BART variants (normalize_before, add_final_layer_norm: mBART) are not supported")
    for encoder_key, decoder_key in (("encoder_ffn_dim", "decoder_ffn_dim"),
                                     ("encoder_attention_heads", "decoder_attention_heads")):
        if hf.get(encoder_key) != hf.get(decoder_key):
            raise ConfigError(f"HF BART with {encoder_key}={hf.get(encoder_key)} != {decoder_key}="
                              f"{hf.get(decoder_key)} is not supported (one width per model)")
    if hf.get("activation_function", "gelu") not in HF_ACTIVATIONS:
        raise ConfigError(f"HF BART activation_function {hf['activation_function']!r} is not supported; known: "
                          f"{sorted(HF_ACTIVATIONS)}")


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain BART config from an HF ``config.json`` dict."""
    _check_supported(hf)
    d_model = hf["d_model"]
    return ModelConfig(
        emb_size=d_model, hidden_size=d_model, feedforward_size=hf["encoder_ffn_dim"],
        heads_num=hf["encoder_attention_heads"], layers_num=hf["encoder_layers"],
        decoder_layers_num=hf["decoder_layers"], vocab_size=hf["vocab_size"],
        max_seq_length=hf["max_position_embeddings"], hidden_act=HF_ACTIVATIONS[hf.get("activation_function", "gelu")],
        dropout=hf.get("dropout", 0.1), embedding=("word", "pos"), tgt_embedding=("word", "pos"),
        share_embedding=True, encoder="transformer", decoder="transformer", mask="fully_visible",
        layernorm_positioning="post", layernorm="standard", layernorm_eps=1e-5, feed_forward="dense",
        target=("lm",), tie_weights=bool(hf.get("tie_word_embeddings", True)), has_lmtarget_bias=True,
    )


def hf_config_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """The HF ``config.json`` dict of a TencentPretrain BART config."""
    acts = {v: k for k, v in HF_ACTIVATIONS.items()}
    layers = config.decoder_layers_num or config.layers_num
    return {
        "architectures": ["BartForConditionalGeneration"], "model_type": "bart", "vocab_size": vocab_size,
        "d_model": config.hidden_size, "encoder_layers": config.layers_num, "decoder_layers": layers,
        "encoder_ffn_dim": config.feedforward_size, "decoder_ffn_dim": config.feedforward_size,
        "encoder_attention_heads": config.heads_num, "decoder_attention_heads": config.heads_num,
        "max_position_embeddings": config.max_seq_length, "activation_function": acts[config.hidden_act],
        "dropout": config.dropout, "attention_dropout": config.dropout, "activation_dropout": 0.0,
        "scale_embedding": False, "tie_word_embeddings": config.tie_weights, "is_encoder_decoder": True,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2,
        "forced_eos_token_id": 2,
    }


FAMILY = HfFamily(
    model_type="bart",
    name="BART",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=bart_hf_weight_map,
    generation_config=True,
)
