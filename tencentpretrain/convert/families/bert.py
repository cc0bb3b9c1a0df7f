"""The HuggingFace BERT family (``model_type: bert``, ``BertForMaskedLM`` / ``BertForPreTraining``) <-> TencentPretrain.

Segment ids: TencentPretrain reserves segment 0 for padding, so its segment table has 3 rows where HF's
token-type table has 2; row 0 is zeros and rows 1, 2 are HF's types 0, 1 (feed ``seg = token_type_ids + 1``).
HF's LayerNorm is the standard one, so converted configs select ``layernorm: "standard"``.
``BertForPreTraining`` adds the ``sp`` target (pooler + next-sentence head).
HF's MLM head stores its bias twice (``cls.predictions.bias`` and the decoder's: an alias) and may leave the
decoder weight out of the file when it is tied to the word embeddings (a tie).

Fine-tuned task heads (``HEADS``) keep the encoder and replace the pretraining heads with the original's
fine-tuning keys: ``BertForSequenceClassification`` (pooler -> ``output_layer_1``, ``classifier`` ->
``output_layer_2``: run_classifier.py), ``BertForTokenClassification`` (``classifier`` -> ``output_layer``:
run_ner.py) and ``BertForQuestionAnswering`` (``qa_outputs`` -> ``output_layer``, start and end: run_cmrc.py).
"""

from __future__ import annotations

import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.hf_family import HIDDEN, LABELS, HeadLinear, HfFamily, HfHead
from tencentpretrain.convert.weight_map import Rule, Tie, WeightMap
from tencentpretrain.errors import ConfigError

HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_fast", "gelu_pytorch_tanh": "gelu_fast", "relu": "relu"}


def _add_padding_segment(w: torch.Tensor) -> torch.Tensor:  # (2, H) -> (3, H)
    return torch.cat([torch.zeros_like(w[:1]), w], dim=0)


def _drop_padding_segment(w: torch.Tensor) -> torch.Tensor:  # (3, H) -> (2, H)
    return w[1:].contiguous()


def _backbone_rules() -> list[Rule]:
    """The embedding and encoder: what every BERT model, pretrained or fine-tuned, holds."""
    layer, tp = "bert.encoder.layer.{}", "encoder.transformer.{}"
    rules = [
        Rule("bert.embeddings.word_embeddings.weight", "embedding.word.embedding.weight"),
        Rule("bert.embeddings.position_embeddings.weight", "embedding.pos.embedding.weight"),
        Rule("bert.embeddings.token_type_embeddings.weight", "embedding.seg.embedding.weight",
             _add_padding_segment, _drop_padding_segment),
        Rule("bert.embeddings.LayerNorm.weight", "embedding.layer_norm.gamma"),
        Rule("bert.embeddings.LayerNorm.bias", "embedding.layer_norm.beta"),
    ]
    for i, name in enumerate(("query", "key", "value")):
        for p in ("weight", "bias"):
            rules.append(Rule(f"{layer}.attention.self.{name}.{p}", f"{tp}.self_attn.linear_layers.{i}.{p}"))
    for p, q in (("weight", "gamma"), ("bias", "beta")):
        rules += [
            Rule(f"{layer}.attention.output.dense.{p}", f"{tp}.self_attn.final_linear.{p}"),
            Rule(f"{layer}.attention.output.LayerNorm.{p}", f"{tp}.layer_norm_1.{q}"),
            Rule(f"{layer}.intermediate.dense.{p}", f"{tp}.feed_forward.linear_1.{p}"),
            Rule(f"{layer}.output.dense.{p}", f"{tp}.feed_forward.linear_2.{p}"),
            Rule(f"{layer}.output.LayerNorm.{p}", f"{tp}.layer_norm_2.{q}"),
        ]
    return rules


# position_ids: a recomputable buffer older transformers versions saved.
IGNORED = [r"\.position_ids$"]


def bert_hf_weight_map(config: ModelConfig, hf: dict | None = None) -> WeightMap:
    rules = _backbone_rules()
    for p, q in (("weight", "gamma"), ("bias", "beta")):
        rules += [
            Rule(f"cls.predictions.transform.dense.{p}", f"target.mlm.linear_1.{p}"),
            Rule(f"cls.predictions.transform.LayerNorm.{p}", f"target.mlm.layer_norm.{q}"),
        ]
        if "sp" in config.target:
            rules += [
                Rule(f"bert.pooler.dense.{p}", f"target.sp.linear_1.{p}"),
                Rule(f"cls.seq_relationship.{p}", f"target.sp.linear_2.{p}"),
            ]
    rules += [
        Rule("cls.predictions.decoder.weight", "target.mlm.linear_2.weight"),
        Rule("cls.predictions.decoder.bias", "target.mlm.linear_2.bias", aliases=("cls.predictions.bias",)),
    ]
    ties = []
    if (hf or {}).get("tie_word_embeddings", True):  # save_pretrained leaves the tied decoder weight out
        ties.append(Tie("target.mlm.linear_2.weight", "embedding.word.embedding.weight"))
    return WeightMap("HuggingFace BERT", rules, ignored_external=IGNORED, ties=ties)


def bert_backbone_weight_map(hf: dict | None = None) -> WeightMap:
    """The embedding + encoder map the task heads extend."""
    return WeightMap("HuggingFace BERT", _backbone_rules(), ignored_external=IGNORED)


HEADS = (
    HfHead("BertForSequenceClassification", (HeadLinear("bert.pooler.dense", "output_layer_1", HIDDEN),
                                             HeadLinear("classifier", "output_layer_2", LABELS)), pooling="first"),
    HfHead("BertForTokenClassification", (HeadLinear("classifier", "output_layer", LABELS),)),
    HfHead("BertForQuestionAnswering", (HeadLinear("qa_outputs", "output_layer", 2),)),
)


def model_config_from_hf(hf: dict) -> ModelConfig:
    """A TencentPretrain BERT config from an HF ``config.json`` dict."""
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ConfigError(f"HF BERT hidden_act {act!r} is not supported; known: {sorted(HF_ACTIVATIONS)}")
    if hf.get("type_vocab_size", 2) != 2:
        raise ConfigError(f"HF BERT type_vocab_size must be 2 (segments A/B), got {hf['type_vocab_size']}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError("only absolute position embeddings are supported")
    pretraining = "BertForPreTraining" in (hf.get("architectures") or [])
    hidden = hf["hidden_size"]
    return ModelConfig(
        emb_size=hidden, hidden_size=hidden, feedforward_size=hf["intermediate_size"],
        heads_num=hf["num_attention_heads"], layers_num=hf["num_hidden_layers"], vocab_size=hf["vocab_size"],
        max_seq_length=hf["max_position_embeddings"], hidden_act=HF_ACTIVATIONS[act],
        dropout=hf.get("hidden_dropout_prob", 0.1), embedding=("word", "pos", "seg"), encoder="transformer",
        mask="fully_visible", layernorm_positioning="post", layernorm="standard",
        layernorm_eps=hf.get("layer_norm_eps", 1e-12), feed_forward="dense",
        target=("mlm", "sp") if pretraining else ("mlm",), tie_weights=bool(hf.get("tie_word_embeddings", True)),
    )


def hf_config_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """The HF ``config.json`` dict of a TencentPretrain BERT config."""
    acts = {v: k for k, v in HF_ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}
    return {
        "architectures": ["BertForPreTraining" if "sp" in config.target else "BertForMaskedLM"],
        "model_type": "bert", "vocab_size": vocab_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.feedforward_size, "num_attention_heads": config.heads_num,
        "num_hidden_layers": config.layers_num, "max_position_embeddings": config.max_seq_length,
        "hidden_act": acts[config.hidden_act], "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.dropout, "layer_norm_eps": config.layernorm_eps,
        "type_vocab_size": 2, "tie_word_embeddings": config.tie_weights,
    }


FAMILY = HfFamily(
    model_type="bert",
    name="BERT",
    config_from_hf=model_config_from_hf,
    hf_config=hf_config_from_model_config,
    weight_map=bert_hf_weight_map,
    heads=HEADS,
    backbone_map=bert_backbone_weight_map,
)
