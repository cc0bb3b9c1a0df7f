"""The HuggingFace ALBERT family (``model_type: albert``, ``AlbertForMaskedLM`` / ``AlbertForPreTraining``) <->
TencentPretrain.

ALBERT is BERT (post-norm, standard LayerNorm, segments with our padding row 0: see ``families/bert.py``) with two
changes our config already has: factorized embeddings (``factorized_embedding_parameterization``: embeddings of
``emb_size`` projected to ``hidden_size`` by ``encoder.linear``, HF's ``embedding_hidden_mapping_in``; the MLM
head predicts in ``emb_size``) and one layer shared by all ``layers_num`` positions (``parameter_sharing``: keys
``encoder.transformer.*`` without an index, HF's ``albert_layer_groups.0.albert_layers.0``). HF's more general
layer groups (``num_hidden_groups``, ``inner_group_num`` other than 1) are refused.
``AlbertForPreTraining`` adds the sentence-order head (``sp``: HF's pooler + ``sop_classifier``).
"""

from __future__ import annotations

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.families.bert import HF_ACTIVATIONS, _add_padding_segment, _drop_padding_segment
from tencentpretrain.convert.hf_family import HfFamily
from tencentpretrain.convert.weight_map import Rule, Tie, WeightMap
from tencentpretrain.errors import ConfigError

SHARED_LAYER = "albert.encoder.albert_layer_groups.0.albert_layers.0"
LAYER_PARTS = (  # HF module in the shared layer, ours in encoder.transformer, LayerNorm (gamma/beta names)
    ("attention.query", "self_attn.linear_layers.0", False),
    ("attention.key", "self_attn.linear_layers.1", False),
    ("attention.value", "self_attn.linear_layers.2", False),
    ("attention.dense", "self_attn.final_linear", False),
    ("attention.LayerNorm", "layer_norm_1", True),
    ("ffn", "feed_forward.linear_1", False),
    ("ffn_output", "feed_forward.linear_2", False),
    ("full_layer_layer_norm", "layer_norm_2", True),
)


def _linear_rules(external: str, internal: str, norm: bool) -> list[Rule]:
    names = (("weight", "gamma"), ("bias", "beta")) if norm else (("weight", "weight"), ("bias", "bias"))
    return [Rule(f"{external}.{hf}", f"{internal}.{ours}") for hf, ours in names]


def albert_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    rules = [
        Rule("albert.embeddings.word_embeddings.weight", "embedding.word.embedding.weight"),
        Rule("albert.embeddings.position_embeddings.weight", "embedding.pos.embedding.weight"),
        Rule("albert.embeddings.token_type_embeddings.weight", "embedding.seg.embedding.weight",
             _add_padding_segment, _drop_padding_segment),
        *_linear_rules("albert.embeddings.LayerNorm", "embedding.layer_norm", True),
        *_linear_rules("albert.encoder.embedding_hidden_mapping_in", "encoder.linear", False),
        *_linear_rules("predictions.dense", "target.mlm.linear_1", False),
        *_linear_rules("predictions.LayerNorm", "target.mlm.layer_norm", True),
        Rule("predictions.decoder.weight", "target.mlm.linear_2.weight"),
        Rule("predictions.decoder.bias", "target.mlm.linear_2.bias", aliases=("predictions.bias",)),
    ]
    for external, internal, norm in LAYER_PARTS:
        rules += _linear_rules(f"{SHARED_LAYER}.{external}", f"encoder.transformer.{internal}", norm)
    if "sp" in config.target:
        rules += [*_linear_rules("albert.pooler", "target.sp.linear_1", False),
                  *_linear_rules("sop_classifier.classifier", "target.sp.linear_2", False)]
    ties = []
    if (hf or {}).get("tie_word_embeddings", True):  # save_pretrained leaves the tied decoder weight out
        ties.append(Tie("target.mlm.linear_2.weight", "embedding.word.embedding.weight"))
    return WeightMap("HuggingFace ALBERT", rules, ignored_external=[r"\.position_ids$"], ties=ties)


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain ALBERT config from an HF ``config.json`` dict."""
    act = hf.get("hidden_act", "gelu_new")
    if act not in HF_ACTIVATIONS:
        raise ConfigError(f"HF ALBERT hidden_act {act!r} is not supported; known: {sorted(HF_ACTIVATIONS)}")
    if hf.get("num_hidden_groups", 1) != 1 or hf.get("inner_group_num", 1) != 1:
        raise ConfigError("HF ALBERT with num_hidden_groups or inner_group_num other than 1 is not supported "
                          "(TencentPretrain shares one layer across all positions)")
    if hf.get("type_vocab_size", 2) != 2:
        raise ConfigError(f"HF ALBERT type_vocab_size must be 2 (segments A/B), got {hf['type_vocab_size']}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError("only absolute position embeddings are supported")
    pretraining = "AlbertForPreTraining" in (hf.get("architectures") or [])
    return ModelConfig(
        emb_size=hf.get("embedding_size", 128), hidden_size=hf["hidden_size"],
        feedforward_size=hf["intermediate_size"], heads_num=hf["num_attention_heads"],
        layers_num=hf["num_hidden_layers"], vocab_size=hf["vocab_size"],
        max_seq_length=hf.get("max_position_embeddings", 512), hidden_act=HF_ACTIVATIONS[act],
        dropout=hf.get("hidden_dropout_prob", 0.0), embedding=("word", "pos", "seg"), encoder="transformer",
        mask="fully_visible", layernorm_positioning="post", layernorm="standard",
        layernorm_eps=hf.get("layer_norm_eps", 1e-12), feed_forward="dense",
        target=("mlm", "sp") if pretraining else ("mlm",), tie_weights=bool(hf.get("tie_word_embeddings", True)),
        factorized_embedding_parameterization=True, parameter_sharing=True,
    )


def hf_config_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """The HF ``config.json`` dict of a TencentPretrain ALBERT config."""
    acts = {v: k for k, v in HF_ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}
    return {
        "architectures": ["AlbertForPreTraining" if "sp" in config.target else "AlbertForMaskedLM"],
        "model_type": "albert", "vocab_size": vocab_size, "embedding_size": config.emb_size,
        "hidden_size": config.hidden_size, "intermediate_size": config.feedforward_size,
        "num_attention_heads": config.heads_num, "num_hidden_layers": config.layers_num,
        "num_hidden_groups": 1, "inner_group_num": 1, "max_position_embeddings": config.max_seq_length,
        "hidden_act": acts[config.hidden_act], "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.dropout, "classifier_dropout_prob": config.dropout,
        "layer_norm_eps": config.layernorm_eps, "type_vocab_size": 2, "tie_word_embeddings": config.tie_weights,
        "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3,
    }


FAMILY = HfFamily(
    model_type="albert",
    name="ALBERT",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=albert_hf_weight_map,
)
