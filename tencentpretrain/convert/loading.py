"""Building a model and filling it from a checkpoint in one call: what inference, evaluation and conversion share."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import torch

from tencentpretrain.checkpoint import (
    StateDict,
    check_state_dict,
    iter_state_dict,
    load_checkpoint,
    load_file,
    load_state_into,
)
from tencentpretrain.config import ModelConfig, load_model_config
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.models.model import Model, build_model
from tencentpretrain.transforms.lora import LoraConfig, apply_lora

HF_CONFIG = "config.json"


def is_hf_directory(path: str) -> bool:
    """True when ``path`` is a HuggingFace model directory (it has a config.json with a model_type)."""
    config = os.path.join(path, HF_CONFIG)
    if not (os.path.isdir(path) and os.path.isfile(config)):
        return False
    with open(config, encoding="utf-8") as f:
        return "model_type" in json.load(f)


def load_hf_model(path: str, *, dtype: torch.dtype = torch.float32) -> Model:
    """The model of an HF directory of any registered family (safetensors or .bin, single or sharded), converted
    shard by shard through the family's weight map."""
    from tencentpretrain.convert.hf import hf_import_plan, hf_task_head, iter_hf_state

    head = hf_task_head(path)
    if head is not None:
        raise ConfigError(f"{path} holds a fine-tuned {head.architecture}, not a pretrained model: use it with "
                          "the fine-tuning scripts (finetune/, --pretrained_model_path), or convert it with its "
                          "task-head converter in scripts/")
    _, config, _ = hf_import_plan(path)  # checks every key before a tensor is read
    state: dict[str, torch.Tensor] = {}
    for _, shard in iter_hf_state(path, config):
        state.update({k: v.to(dtype) if v.is_floating_point() else v for k, v in shard.items()})
    with torch.device("meta"):
        model = build_model(config, init=False)
    _assign(model, state, path)
    return model


# The architecture fields an HF config.json must agree on with the run's JSON config.
ARCHITECTURE_FIELDS = ("hidden_size", "feedforward_size", "heads_num", "kv_heads_num", "head_size", "layers_num",
                       "rope_theta", "rope_scaling_factor", "layernorm_eps", "tie_weights")


def iter_pretrained_state(path: str, config: ModelConfig) -> Iterator[tuple[str, StateDict]]:
    """Yield (file, state_dict with TencentPretrain keys) per shard of the checkpoint at ``path``.

    ``path`` is ours (a .bin/.safetensors file or a sharded directory), read as stored, or an HF directory of any
    registered family, converted shard by shard through the family's weight map; its config.json must describe
    the same architecture as ``config`` (else a ConfigError names the fields that differ).
    """
    if not is_hf_directory(path):
        yield from iter_state_dict(path)
        return
    from tencentpretrain.convert.families import family_of, read_hf_config
    from tencentpretrain.convert.hf import iter_hf_state

    hf = read_hf_config(path)
    family = family_of(hf, path)
    hf_config = family.config_from_hf(hf)
    differences = [f"{name}: {getattr(config, name)} in the config, {getattr(hf_config, name)} in "
                   f"{os.path.join(path, HF_CONFIG)}" for name in ARCHITECTURE_FIELDS
                   if getattr(config, name) != getattr(hf_config, name)]
    if differences:
        raise ConfigError(f"{path} is another architecture than the config: " + "; ".join(differences)
                          + f". Use the JSON config that matches it (scripts/convert_{family.model_type}_from_"
                          "huggingface_to_tencentpretrain.py writes one)")
    yield from iter_hf_state(path, config)


def load_pretrained(model: Model, path: str) -> None:
    """Fill ``model`` (possibly built on the meta device) strictly from ``path``: ours or an HF directory of any
    registered family (see ``iter_pretrained_state``)."""
    if not is_hf_directory(path):
        load_checkpoint(model, path)
        return
    state: StateDict = {}
    for _, shard in iter_pretrained_state(path, model.config):
        state.update(shard)
    load_state_into(model, state, source=path)


def _assign(model: Model, state: dict[str, torch.Tensor], source: str) -> None:
    check_state_dict(model.state_dict(), state, source=source)
    model.load_state_dict(state, strict=True, assign=True)
    if model.config.tie_weights:
        model.tie_parameters()


def load_model(
    config: ModelConfig | str,
    model_path: str | None,
    *,
    vocab_size: int | None = None,
    lora_path: str | None = None,
    lora_config: LoraConfig | None = None,
    dtype: torch.dtype = torch.float32,
    tgt_vocab_size: int | None = None,
) -> Model:
    """Build the model of ``config`` (a ModelConfig or a JSON path) and load ``model_path`` strictly.

    ``model_path`` may be a TencentPretrain .bin, a .safetensors file or a sharded directory; an HF directory of
    any registered family is read through its weight map (then ``config`` is ignored and may be None). A LoRA file
    (``lora_path``) is loaded on top, with only LoRA keys allowed; its rank comes from the file.
    ``tgt_vocab_size``: rows of the decoder side when it has its own vocabulary (``mt`` with ``--tgt_vocab_path``).
    The model is returned in eval mode.
    """
    if model_path and is_hf_directory(model_path):
        model = load_hf_model(model_path, dtype=dtype)
    else:
        if isinstance(config, str):
            config = load_model_config(config)
        if model_path is None:
            model = build_model(config, vocab_size, tgt_vocab_size=tgt_vocab_size).to(dtype)
        else:
            with torch.device("meta"):
                model = build_model(config, vocab_size, init=False, tgt_vocab_size=tgt_vocab_size)
            load_checkpoint(model, model_path)
            model = model.to(dtype)
    if lora_path:
        load_lora(model, lora_path, lora_config)
    return model.eval()


def load_lora(model: Model, lora_path: str, lora_config: LoraConfig | None = None) -> None:
    """Apply LoRA adapters to ``model`` and load their weights from ``lora_path`` (strict on LoRA keys)."""
    state = load_file(lora_path)
    if not state or not all("lora_" in k for k in state):
        raise CheckpointError(f"{lora_path}: not a LoRA file (expected only keys containing 'lora_')")
    rank = next(v.shape[0] for k, v in state.items() if k.endswith("lora_A"))
    targets = tuple(sorted({k.rsplit(".", 1)[0] for k in state}))  # the adapted modules' full names
    base = lora_config or LoraConfig()
    config = LoraConfig(r=rank, alpha=base.alpha, dropout=0.0, target_modules=targets)
    apply_lora(model, config)
    expected = model.state_dict()
    check_state_dict({k: v for k, v in expected.items() if "lora_" in k}, state, source=lora_path)
    model.load_state_dict(state, strict=False)
