"""The HuggingFace GPT-2 family (``model_type: gpt2``, ``GPT2LMHeadModel``) <-> TencentPretrain.

HF GPT-2 stores its linears as ``Conv1D`` with (in, out) weights, so every weight is transposed, and fuses
Q, K and V into one ``c_attn`` whose output columns are [Q | K | V] (a ``Fused`` entry of the map). A tied
``lm_head``, which ``save_pretrained`` leaves out of the file, is restored from ``wte`` (a ``Tie``).
HF's LayerNorm is the standard one, so converted configs select ``layernorm: "standard"``.
"""

from __future__ import annotations

import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.hf_family import HfFamily
from tencentpretrain.convert.weight_map import Fused, Rule, Tie, WeightMap
from tencentpretrain.errors import ConfigError

HF_ACTIVATIONS = {"gelu_new": "gelu_fast", "gelu_pytorch_tanh": "gelu_fast", "gelu": "gelu", "relu": "relu"}
PARTS = ("q", "k", "v")


def _t(w: torch.Tensor) -> torch.Tensor:
    return w.t().contiguous()


def _split_weight(w: torch.Tensor) -> list[torch.Tensor]:  # (H, 3H) Conv1D -> 3 x (H, H) Linear
    return [_t(piece) for piece in w.chunk(len(PARTS), dim=-1)]


def _join_weight(parts) -> torch.Tensor:  # 3 x (H, H) Linear -> (H, 3H) Conv1D
    return torch.cat([p.t() for p in parts], dim=-1)


def _split_bias(b: torch.Tensor) -> list[torch.Tensor]:  # (3H,) -> 3 x (H,)
    return [piece.contiguous() for piece in b.chunk(len(PARTS), dim=-1)]


def _join_bias(parts) -> torch.Tensor:
    return torch.cat(list(parts), dim=-1)


def gpt2_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    layer, tp = "transformer.h.{}", "encoder.transformer.{}"
    rules = [
        Rule("transformer.wte.weight", "embedding.word.embedding.weight"),
        Rule("transformer.wpe.weight", "embedding.pos.embedding.weight"),
        Rule(f"{layer}.ln_1.weight", f"{tp}.layer_norm_1.gamma"),
        Rule(f"{layer}.ln_1.bias", f"{tp}.layer_norm_1.beta"),
        Rule(f"{layer}.attn.c_proj.weight", f"{tp}.self_attn.final_linear.weight", _t, _t),
        Rule(f"{layer}.attn.c_proj.bias", f"{tp}.self_attn.final_linear.bias"),
        Rule(f"{layer}.ln_2.weight", f"{tp}.layer_norm_2.gamma"),
        Rule(f"{layer}.ln_2.bias", f"{tp}.layer_norm_2.beta"),
        Rule(f"{layer}.mlp.c_fc.weight", f"{tp}.feed_forward.linear_1.weight", _t, _t),
        Rule(f"{layer}.mlp.c_fc.bias", f"{tp}.feed_forward.linear_1.bias"),
        Rule(f"{layer}.mlp.c_proj.weight", f"{tp}.feed_forward.linear_2.weight", _t, _t),
        Rule(f"{layer}.mlp.c_proj.bias", f"{tp}.feed_forward.linear_2.bias"),
        Rule("transformer.ln_f.weight", "encoder.layer_norm.gamma"),
        Rule("transformer.ln_f.bias", "encoder.layer_norm.beta"),
        Rule("lm_head.weight", "target.lm.output_layer.weight"),
    ]
    qkv = tuple(f"{tp}.self_attn.linear_layers.{i}" for i in range(len(PARTS)))
    fused = [
        Fused(f"{layer}.attn.c_attn.weight", tuple(f"{p}.weight" for p in qkv), _split_weight, _join_weight),
        Fused(f"{layer}.attn.c_attn.bias", tuple(f"{p}.bias" for p in qkv), _split_bias, _join_bias),
    ]
    ties = []
    if (hf or {}).get("tie_word_embeddings", True):
        ties.append(Tie("target.lm.output_layer.weight", "embedding.word.embedding.weight"))
    # attn.bias / attn.masked_bias: causal-mask buffers that older transformers versions saved.
    return WeightMap("HuggingFace GPT-2", rules, ignored_external=[r"\.attn\.(masked_)?bias$"], fused=fused,
                     ties=ties)


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain GPT-2 config from an HF ``config.json`` dict."""
    act = hf.get("activation_function", "gelu_new")
    if act not in HF_ACTIVATIONS:
        raise ConfigError(f"HF GPT-2 activation_function {act!r} is not supported; known: {sorted(HF_ACTIVATIONS)}")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        raise ConfigError("HF GPT-2 configs with scale_attn_by_inverse_layer_idx/reorder_and_upcast_attn are not supported")
    hidden = hf["n_embd"]
    return ModelConfig(
        emb_size=hidden, hidden_size=hidden, feedforward_size=hf.get("n_inner") or 4 * hidden,
        heads_num=hf["n_head"], layers_num=hf["n_layer"], vocab_size=hf["vocab_size"],
        max_seq_length=hf["n_positions"], hidden_act=HF_ACTIVATIONS[act], dropout=hf.get("resid_pdrop", 0.1),
        embedding=("word", "pos"), remove_embedding_layernorm=True, encoder="transformer", mask="causal",
        layernorm_positioning="pre", layernorm="standard", layernorm_eps=hf.get("layer_norm_epsilon", 1e-5),
        feed_forward="dense", target=("lm",), tie_weights=bool(hf.get("tie_word_embeddings", True)),
    )


def hf_config_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """The HF ``config.json`` dict of a TencentPretrain GPT-2 config."""
    acts = {"gelu_fast": "gelu_new", "gelu": "gelu", "relu": "relu"}
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab_size,
        "n_embd": config.hidden_size, "n_inner": config.feedforward_size, "n_head": config.heads_num,
        "n_layer": config.layers_num, "n_positions": config.max_seq_length,
        "activation_function": acts[config.hidden_act], "layer_norm_epsilon": config.layernorm_eps,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "tie_word_embeddings": config.tie_weights,
    }


FAMILY = HfFamily(
    model_type="gpt2",
    name="GPT-2",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=gpt2_hf_weight_map,
    generation_config=True,
)
