"""The HuggingFace Pegasus family (``model_type: pegasus``, ``PegasusForConditionalGeneration``) <-> TencentPretrain.

Pegasus is BART's encoder-decoder made pre-norm (``layernorm_positioning: "pre"``, with a final LayerNorm on each
side: ``encoder.layer_norm``, ``decoder.layer_norm``), without the embedding LayerNorm, with fixed sinusoidal
positions and word vectors scaled by sqrt(d_model) (``scale_embedding``). Biases everywhere, one word table for
both sides (``share_embedding``) and a tied head whose bias is HF's ``final_logits_bias`` buffer, as in BART.

Positions: HF's table is not the original's ``sinusoidalpos`` (sin and cos halves instead of interleaved columns,
frequencies 10000^(-2m/E) instead of exp(-k ln(10000) / (E/2 - 1)), position i at row i instead of i + 2), so a
converted model uses ``pegasus_sinusoidalpos`` (tencentpretrain/embeddings/pegasus_sinusoidalpos.py), which
computes HF's rows. The tables HF stores (``embed_positions.weight``, fixed) are not read on import and are
written on export from that formula. A model of the original's ``models/pegasus`` configs (``sinusoidalpos``,
the original's LayerNorm) is refused by the export: HF Pegasus cannot compute it.

Refused: ``scale_embedding`` false (PegasusConfig's default; the released models set it true), different encoder and decoder widths or head counts.
"""

from __future__ import annotations

import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.families.bart import HF_ACTIVATIONS, encoder_decoder_rules, shared_table_ties
from tencentpretrain.convert.hf_family import HfFamily
from tencentpretrain.convert.weight_map import Rule, WeightMap
from tencentpretrain.embeddings.pegasus_sinusoidalpos import pegasus_sinusoidal_rows
from tencentpretrain.errors import ConfigError

POSITIONS = "pegasus_sinusoidalpos"
WORD = "embedding.word.embedding.weight"
SIDES = ("encoder", "decoder")


def _final_norm(side: str) -> list[Rule]:
    """The LayerNorm after the last layer of a pre-norm side."""
    return [Rule(f"model.{side}.layer_norm.{hf}", f"{side}.layer_norm.{ours}") for hf, ours in
            (("weight", "gamma"), ("bias", "beta"))]


def pegasus_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    rules = [*encoder_decoder_rules(), *_final_norm("encoder"), *_final_norm("decoder")]
    ties = shared_table_ties(hf)
    # the fixed position tables: computed by pegasus_sinusoidalpos, written by fixed_position_tables
    return WeightMap("HuggingFace Pegasus", rules, ties=ties,
                     ignored_external=[r"^model\.(en|de)coder\.embed_positions\.weight$"])


def fixed_position_tables(config: ModelConfig) -> dict[str, torch.Tensor]:
    """HF's ``embed_positions.weight`` of both sides: (max_position_embeddings, d_model) float32 each."""
    table = pegasus_sinusoidal_rows(torch.arange(config.max_seq_length), config.emb_size)
    return {f"model.{side}.embed_positions.weight": table.clone() for side in SIDES}


def _check_supported(hf: dict) -> None:
    if not hf.get("scale_embedding", False):  # PegasusConfig's default; the released models set it
        raise ConfigError("HF Pegasus without scale_embedding (word vectors not scaled by sqrt(d_model)) is not "
                          "supported; the released Pegasus models scale them")
    for encoder_key, decoder_key in (("encoder_ffn_dim", "decoder_ffn_dim"),
                                     ("encoder_attention_heads", "decoder_attention_heads")):
        if hf.get(encoder_key) != hf.get(decoder_key):
            raise ConfigError(f"HF Pegasus with {encoder_key}={hf.get(encoder_key)} != {decoder_key}="
                              f"{hf.get(decoder_key)} is not supported (one width per model)")
    if hf.get("activation_function", "gelu") not in HF_ACTIVATIONS:
        raise ConfigError(f"HF Pegasus activation_function {hf['activation_function']!r} is not supported; known: "
                          f"{sorted(HF_ACTIVATIONS)}")


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain Pegasus config from an HF ``config.json`` dict."""
    _check_supported(hf)
    d_model = hf["d_model"]
    return ModelConfig(
        emb_size=d_model, hidden_size=d_model, feedforward_size=hf["encoder_ffn_dim"],
        heads_num=hf["encoder_attention_heads"], layers_num=hf["encoder_layers"],
        decoder_layers_num=hf["decoder_layers"], vocab_size=hf["vocab_size"],
        max_seq_length=hf["max_position_embeddings"], hidden_act=HF_ACTIVATIONS[hf.get("activation_function", "gelu")],
        dropout=hf.get("dropout", 0.1), embedding=("word", POSITIONS), tgt_embedding=("word", POSITIONS),
        remove_embedding_layernorm=True, share_embedding=True, encoder="transformer", decoder="transformer",
        mask="fully_visible", layernorm_positioning="pre", layernorm="standard", layernorm_eps=1e-5,
        feed_forward="dense", target=("lm",), tie_weights=bool(hf.get("tie_word_embeddings", True)),
        has_lmtarget_bias=True,
    )


def hf_config_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """The HF ``config.json`` dict of a TencentPretrain Pegasus config."""
    acts = {v: k for k, v in HF_ACTIVATIONS.items()}
    layers = config.decoder_layers_num or config.layers_num
    return {
        "architectures": ["PegasusForConditionalGeneration"], "model_type": "pegasus", "vocab_size": vocab_size,
        "d_model": config.hidden_size, "encoder_layers": config.layers_num, "decoder_layers": layers,
        "encoder_ffn_dim": config.feedforward_size, "decoder_ffn_dim": config.feedforward_size,
        "encoder_attention_heads": config.heads_num, "decoder_attention_heads": config.heads_num,
        "max_position_embeddings": config.max_seq_length, "activation_function": acts[config.hidden_act],
        "dropout": config.dropout, "attention_dropout": config.dropout, "activation_dropout": 0.0,
        "scale_embedding": True, "tie_word_embeddings": config.tie_weights, "is_encoder_decoder": True,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0, "forced_eos_token_id": 1,
    }


FAMILY = HfFamily(
    model_type="pegasus",
    name="Pegasus",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=pegasus_hf_weight_map,
    generation_config=True,
    fixed_tensors=fixed_position_tables,
)
