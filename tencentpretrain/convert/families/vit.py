"""The HuggingFace ViT family (``model_type: vit``, ``ViTForImageClassification``) <-> TencentPretrain.

ViT is pre-norm with the standard LayerNorm (converted configs select ``layernorm: "standard"``), a ``patch``
+ ``pos`` embedding (HF's (1, T, H) position table is stored as (T, H)) and the ``classifier`` target (one
linear layer on the final [CLS] state). Both HF key layouts are read: transformers 5
(``vit.layers.{i}.attention.q_proj``) and the hub checkpoints' transformers 4 layout
(``vit.encoder.layer.{i}.attention.attention.query``); the transformers 5 layout is written.
"""

from __future__ import annotations

import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.hf_family import HfFamily
from tencentpretrain.convert.weight_map import Rule, WeightMap
from tencentpretrain.errors import ConfigError

HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_fast", "relu": "relu"}


def _squeeze(w: torch.Tensor) -> torch.Tensor:  # (1, T, H) -> (T, H)
    return w.squeeze(0).contiguous()


def _unsqueeze(w: torch.Tensor) -> torch.Tensor:
    return w.unsqueeze(0).contiguous()


def _layer_rules(names: dict[str, str], layer: str) -> list[Rule]:
    tp = "encoder.transformer.{}"
    internal = {
        "q": "self_attn.linear_layers.0", "k": "self_attn.linear_layers.1", "v": "self_attn.linear_layers.2",
        "o": "self_attn.final_linear", "fc1": "feed_forward.linear_1", "fc2": "feed_forward.linear_2",
    }
    rules = [Rule(f"{layer}.{names[k]}.{p}", f"{tp}.{v}.{p}") for k, v in internal.items() for p in ("weight", "bias")]
    for hf, ours in (("layernorm_before", "layer_norm_1"), ("layernorm_after", "layer_norm_2")):
        rules += [Rule(f"{layer}.{hf}.weight", f"{tp}.{ours}.gamma"), Rule(f"{layer}.{hf}.bias", f"{tp}.{ours}.beta")]
    return rules


V5_NAMES = {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "o": "attention.o_proj",
            "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
V4_NAMES = {"q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value",
            "o": "attention.output.dense", "fc1": "intermediate.dense", "fc2": "output.dense"}


def vit_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    rules = [
        Rule("vit.embeddings.cls_token", "embedding.patch.cls_emb"),
        Rule("vit.embeddings.patch_embeddings.projection.weight", "embedding.patch.projection.weight"),
        Rule("vit.embeddings.patch_embeddings.projection.bias", "embedding.patch.projection.bias"),
        Rule("vit.embeddings.position_embeddings", "embedding.pos.embedding.weight", _squeeze, _unsqueeze),
        *_layer_rules(V5_NAMES, "vit.layers.{}"),  # first: the layout written
        *_layer_rules(V4_NAMES, "vit.encoder.layer.{}"),
        Rule("vit.layernorm.weight", "encoder.layer_norm.gamma"),
        Rule("vit.layernorm.bias", "encoder.layer_norm.beta"),
        Rule("classifier.weight", "target.classifier.linear.weight"),
        Rule("classifier.bias", "target.classifier.linear.bias"),
    ]
    return WeightMap("HuggingFace ViT", rules)


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain ViT classifier config from an HF ``config.json`` dict."""
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ConfigError(f"HF ViT hidden_act {act!r} is not supported; known: {sorted(HF_ACTIVATIONS)}")
    if not hf.get("qkv_bias", True):
        raise ConfigError("HF ViT configs with qkv_bias=false are not supported")
    labels = hf.get("num_labels") or len(hf.get("id2label") or {}) or 2
    size, patch, hidden = hf["image_size"], hf["patch_size"], hf["hidden_size"]
    return ModelConfig(
        emb_size=hidden, hidden_size=hidden, feedforward_size=hf["intermediate_size"],
        heads_num=hf["num_attention_heads"], layers_num=hf["num_hidden_layers"], vocab_size=1,
        max_seq_length=(size // patch) ** 2 + 1, hidden_act=HF_ACTIVATIONS[act],
        dropout=hf.get("hidden_dropout_prob", 0.0), embedding=("patch", "pos"), remove_embedding_layernorm=True,
        encoder="transformer", mask="fully_visible", layernorm_positioning="pre", layernorm="standard",
        layernorm_eps=hf.get("layer_norm_eps", 1e-12), feed_forward="dense", target=("classifier",),
        pooling="first", labels_num=labels, image_height=size, image_width=size, patch_size=patch,
        channels_num=hf.get("num_channels", 3),
    )


def hf_config_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """The HF ``config.json`` dict of a TencentPretrain ViT classifier config."""
    if config.image_height != config.image_width:
        raise ConfigError("HF ViT needs square images (image_height == image_width)")
    acts = {v: k for k, v in HF_ACTIVATIONS.items()}
    return {
        "architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": config.hidden_size,
        "intermediate_size": config.feedforward_size, "num_attention_heads": config.heads_num,
        "num_hidden_layers": config.layers_num, "hidden_act": acts[config.hidden_act],
        "hidden_dropout_prob": config.dropout, "attention_probs_dropout_prob": config.dropout,
        "layer_norm_eps": config.layernorm_eps, "image_size": config.image_height, "patch_size": config.patch_size,
        "num_channels": config.channels_num, "qkv_bias": True,
        "id2label": {str(i): f"LABEL_{i}" for i in range(config.labels_num or 2)},
    }


FAMILY = HfFamily(
    model_type="vit",
    name="ViT",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=vit_hf_weight_map,
)
