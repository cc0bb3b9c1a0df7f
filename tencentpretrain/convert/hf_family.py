"""What describes one HuggingFace family: ``HfFamily``, plus the checks and in-memory conversions every family shares.

A family is one file in ``tencentpretrain/convert/families/`` that defines ``FAMILY = HfFamily(...)``: the HF
``model_type`` it handles, how an HF ``config.json`` becomes a ModelConfig and back, and its declarative
``WeightMap`` (rules, aliases, fused tensors, ties). The shard-by-shard driver (``tencentpretrain.convert.hf``)
and ``load_model`` work from that alone. A family may also declare fine-tuned task heads (``HfHead``: HF's
``BertForSequenceClassification`` ...) on its encoder, whose keys are those of the fine-tuning models
(``tencentpretrain.finetune``): the pretrained embedding and encoder plus the original's ``output_layer*``.

Conversion is strict both ways: every source key must be consumed (the weight map raises on leftovers) and
every key the target model expects must be produced (``check_complete``). An export is refused when the HF
class cannot compute what the TencentPretrain config computes (``check_exportable``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.weight_map import Rule, WeightMap, check_complete
from tencentpretrain.errors import ConfigError

StateDict = dict[str, torch.Tensor]
HF_CONFIG = "config.json"


LABELS = "labels"  # HeadLinear.out_features: as many outputs as the task has labels
HIDDEN = "hidden"  # HeadLinear.out_features: hidden_size outputs


@dataclass(frozen=True)
class HeadLinear:
    """One linear layer (weight + bias) of a task head: its HF module, ours, and its output width."""

    external: str  # HF module name, e.g. "classifier"
    internal: str  # TencentPretrain module name, e.g. "output_layer_2"
    out_features: int | str  # LABELS, HIDDEN or a fixed width (extractive QA: 2, start and end)


@dataclass(frozen=True)
class HfHead:
    """A fine-tuned task head on a family's encoder: the HF class (config.json ``architectures``) and its layers.

    Its TencentPretrain checkpoint holds the family's ``embedding.*`` / ``encoder.*`` keys plus the head's
    layers, exactly the state keys of the fine-tuning model of the task (the original's ``run_classifier.py``,
    ``run_ner.py``, ``run_cmrc.py``).
    """

    architecture: str  # "BertForSequenceClassification"
    layers: tuple[HeadLinear, ...]
    pooling: str | None = None  # the sentence representation the HF class computes (None: a per-token head)

    def check_exportable(self, config: ModelConfig) -> None:
        """Refuse a config whose head computes something else than the HF class (another ``pooling``)."""
        if self.pooling is not None and config.pooling != self.pooling:
            raise ConfigError(f"HF {self.architecture} pools the {self.pooling!r} position, the config pools "
                              f"{config.pooling!r}: the exported model would compute something else; only a model "
                              f"fine-tuned with --pooling {self.pooling} can be exported as {self.architecture}")

    def rules(self) -> list[Rule]:
        return [Rule(f"{layer.external}.{p}", f"{layer.internal}.{p}")
                for layer in self.layers for p in ("weight", "bias")]

    @property
    def has_labels(self) -> bool:
        """Whether the head's width depends on the task's label count (not extractive QA's fixed 2)."""
        return any(layer.out_features == LABELS for layer in self.layers)

    @property
    def labels_key(self) -> str | None:
        """The TencentPretrain weight whose rows are the labels (None when the head has a fixed width)."""
        return next((f"{layer.internal}.weight" for layer in self.layers if layer.out_features == LABELS), None)

    def outputs(self, labels_num: int | None) -> int:
        """The width of the head's last layer: HF's ``num_labels``."""
        last = self.layers[-1].out_features
        return labels_num if last == LABELS else last

    def shapes(self, hidden_size: int, labels_num: int | None) -> dict[str, torch.Size]:
        """key -> shape of the head's TencentPretrain tensors."""
        if self.has_labels and not labels_num:
            raise ConfigError(f"{self.architecture} needs the number of labels (labels_num)")
        out: dict[str, torch.Size] = {}
        for layer in self.layers:
            width = {LABELS: labels_num, HIDDEN: hidden_size}.get(layer.out_features, layer.out_features)
            out[f"{layer.internal}.weight"] = torch.Size((width, hidden_size))
            out[f"{layer.internal}.bias"] = torch.Size((width,))
        return out

    def weight_map(self, backbone: WeightMap) -> WeightMap:
        """The family's embedding + encoder map with this head's layers."""
        return WeightMap(f"{backbone.name} {self.architecture}", [*backbone.rules, *self.rules()],
                         backbone.ignored_external, fused=backbone.fused, ties=backbone.ties)


@dataclass(frozen=True)
class GgufArch:
    """How a family is written as GGUF: llama.cpp's architecture name and the GGUF tensor map for a config."""

    arch: str  # general.architecture: "llama", "qwen2"
    weight_map: Callable[[ModelConfig], WeightMap]  # GGUF tensor names <-> TencentPretrain keys


@dataclass(frozen=True)
class HfFamily:
    """Everything that differs between two HF families."""

    model_type: str  # config.json's "model_type": the registry key
    name: str  # for messages: "BERT", "LLaMA"
    config_from_hf: Callable[[dict], ModelConfig]  # config.json dict -> ModelConfig (ConfigError if unsupported)
    hf_config: Callable[[ModelConfig, int], dict]  # (ModelConfig, vocabulary rows) -> config.json dict
    weight_map: Callable[[ModelConfig, dict], WeightMap]  # (ModelConfig, config.json dict) -> the map
    generation_config: bool = False  # a generative family: the export writes generation_config.json
    heads: tuple[HfHead, ...] = ()  # fine-tuned task heads on the encoder (needs backbone_map)
    backbone_map: Callable[[dict], WeightMap] | None = None  # config.json dict -> embedding + encoder map
    gguf: GgufArch | None = None  # llama.cpp runs this family (tencentpretrain.convert.llama_gguf)
    # the model_type of its config.json when that is another family's (sbert: a BertModel directory says "bert");
    # such a family is never picked from config.json, only by a caller that names it
    hf_model_type: str | None = None
    default_head: str | None = None  # the head an export writes when none is asked for (sbert: BertModel)
    # files of the HF directory besides config.json: directory -> keys merged into the config.json dict
    # before config_from_hf (sbert: the pooling of 1_Pooling/config.json) ...
    read_extra_config: Callable[[str], dict] | None = None
    # ... and (output directory, ModelConfig) -> writes them on export
    write_extra_files: Callable[[str, ModelConfig], None] | None = None
    # ModelConfig -> HF tensors that are a fixed function of the config (Pegasus's sinusoidal tables): the export
    # writes them, the import leaves them out (the weight map ignores them)
    fixed_tensors: Callable[[ModelConfig], dict[str, torch.Tensor]] | None = None

    def claims(self, hf: dict) -> bool:
        """Whether a config.json dict names this family's model_type (its own, or the one it reads)."""
        return hf.get("model_type") in (self.model_type, self.hf_model_type)

    def full_hf_config(self, hf: dict, directory: str) -> dict:
        """The config.json dict with what the family reads from the directory's other files."""
        return hf if self.read_extra_config is None else {**hf, **self.read_extra_config(directory)}

    def head(self, architecture: str) -> HfHead:
        """The head of the HF class ``architecture``; a ConfigError listing the family's heads otherwise."""
        for head in self.heads:
            if head.architecture == architecture:
                return head
        known = ", ".join(h.architecture for h in self.heads) or "none"
        raise ConfigError(f"HF {self.name} has no task head {architecture!r}; known: {known}")

    def head_of(self, hf: dict) -> HfHead | None:
        """The task head named by a config.json dict's ``architectures`` (None: a pretraining class)."""
        names = {h.architecture for h in self.heads}
        found = [a for a in hf.get("architectures") or [] if a in names]
        return self.head(found[0]) if found else None


# Fields that do not change what an exported model computes: training-only ones, the vocabulary (checked against
# the embedding), and tie_weights: an export writes the output layer as a tensor unless HF ties it itself, so an
# HF class with an untied head (T5's) still computes what our tied one does. layer_number_scale is an fp16 guard
# that leaves the function unchanged (tencentpretrain/layers/alibi.py).
_NOT_COMPUTED = ("dropout", "vocab_size", "label_smoothing", "ignore_index", "tie_weights", "layer_number_scale")


def computed_fields(config: ModelConfig) -> dict:
    """The fields of ``config`` that decide the function the model computes, normalized (derived head counts,
    fields of absent components left out), so two configs of the same model compare equal."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _NOT_COMPUTED}
    if config.is_dual:  # each stream as the config it resolves to, not the JSON object that overrides the top
        values.update(zip(("stream_0", "stream_1"), (computed_fields(s) for s in config.streams), strict=True))
    values.update(local_kv_heads_num=config.kv_heads_num, attention_head_size=config.head_size,
                  qkv_bias=config.use_qkv_bias)
    absent = []
    if config.decoder is None:
        absent += ["decoder_layers_num", "tgt_embedding", "share_embedding"]
    else:
        values["decoder_layers_num"] = config.decoder_layers_num or config.layers_num
    if not config.relative_position_embedding:
        absent.append("relative_attention_buckets_num")
    if not config.rotary_position_embedding:
        absent += ["rope_theta", "rope_scaling"]
    if "patch" not in config.embedding:
        absent += ["image_height", "image_width", "patch_size", "channels_num"]
    if not {"classifier", "cls"} & set(config.target):
        absent += ["pooling", "labels_num"]
    for name in absent:
        values.pop(name, None)
    return values


# What a fine-tuned model's config says about its pretraining targets: nothing its task head computes.
_TARGET_FIELDS = ("target", "pooling", "labels_num")


def check_exportable(family: HfFamily, config: ModelConfig, vocab_size: int, *, backbone_only: bool = False) -> dict:
    """The HF config.json dict of ``config``, or a ConfigError when the HF class cannot compute the same function.

    The test is a round trip: config -> config.json -> config must give back every computed field; what is lost
    on the way (a LayerNorm variant, an activation, a bias switch the HF class does not have) is listed.
    ``backbone_only``: only the embedding and encoder matter (a task head replaces the targets).
    """
    try:
        hf = family.hf_config(config, vocab_size)
    except KeyError as e:
        raise ConfigError(f"HF {family.name} has no equivalent of {e} in this config; it cannot be exported as "
                          f"{family.model_type}") from None
    back = family.config_from_hf(hf)
    ours, theirs = computed_fields(config), computed_fields(back)
    if backbone_only:
        for name in _TARGET_FIELDS:
            ours.pop(name, None)
            theirs.pop(name, None)
    lost = [f"{name}={ours[name]!r} (HF {family.name} computes {theirs.get(name)!r})"
            for name in ours if ours[name] != theirs.get(name)]
    if lost:
        raise ConfigError(f"HF {family.name} ({hf.get('architectures', ['?'])[0]}) cannot represent this config: "
                          + "; ".join(lost) + ". Writing it would give a model that computes something else; "
                          "export a config of this family (e.g. the one its HF conversion wrote)")
    return hf


def expected_keys(config: ModelConfig, vocab_size: int | None = None) -> list[str]:
    """The state_dict keys of the model ``config`` describes (built on the meta device: no memory)."""
    from tencentpretrain.models.model import build_model

    with torch.device("meta"):
        return list(build_model(config, vocab_size, init=False).state_dict())


def hf_state_to_internal(family: HfFamily, hf_state: StateDict, hf_config: dict) -> tuple[ModelConfig, StateDict]:
    """(ModelConfig, TencentPretrain state) of an in-memory HF state dict and its config.json dict."""
    config = family.config_from_hf(hf_config)
    state = family.weight_map(config, hf_config).to_internal(hf_state, source=f"HF {family.name}")
    check_complete(state, expected_keys(config), what=f"HF {family.name} -> TencentPretrain conversion")
    return config, state


def internal_state_to_hf(family: HfFamily, state: StateDict, config: ModelConfig,
                         vocab_size: int) -> tuple[dict, StateDict]:
    """(HF config.json dict, HF state) of an in-memory TencentPretrain state."""
    check_complete(state, expected_keys(config, vocab_size), what=f"TencentPretrain {family.name} checkpoint")
    hf_config = check_exportable(family, config, vocab_size)
    hf_state = family.weight_map(config, hf_config).to_external(state, source=family.name, drop_ties=True)
    return hf_config, hf_state
