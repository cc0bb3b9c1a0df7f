"""Shared HF <-> TencentPretrain conversion driver for the non-LLaMA families (BERT, GPT-2, T5, ViT).

A family is described by an ``HfFamily``: how an HF ``config.json`` becomes a ModelConfig and back, its
declarative ``WeightMap``, and optional hooks for the few tensors that are not one-to-one (GPT-2's fused QKV,
T5's rescaled tied head). Conversion is strict both ways: every source key must be consumed (the weight map
raises on leftovers) and every key the target model expects must be produced (``check_complete``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tencentpretrain.atomic import write_json
from tencentpretrain.checkpoint import load_state_dict, save_file
from tencentpretrain.config import ModelConfig, save_model_config
from tencentpretrain.convert.weight_map import WeightMap, check_complete
from tencentpretrain.errors import CheckpointError
from tencentpretrain.models.capabilities import word_embedding_key

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
HF_CONFIG = "config.json"


def _same(state: StateDict, hf_config: dict) -> StateDict:
    return dict(state)


@dataclass(frozen=True)
class HfFamily:
    """Everything that differs between two HF families."""

    name: str
    config_from_hf: Callable[[dict], ModelConfig]
    hf_config: Callable[[ModelConfig, int], dict]
    weight_map: Callable[[ModelConfig], WeightMap]
    # external state -> external state with one-to-one keys (before ``to_internal``)
    prepare_external: Callable[[StateDict, dict], StateDict] = field(default=_same)
    # external state written by ``to_external`` -> the state HF expects (after ``to_external``)
    finish_external: Callable[[StateDict, dict], StateDict] = field(default=_same)


def expected_keys(config: ModelConfig) -> list[str]:
    """The state_dict keys of the model ``config`` describes (built on the meta device: no memory)."""
    from tencentpretrain.models.model import build_model

    with torch.device("meta"):
        return list(build_model(config, init=False).state_dict())


def hf_state_to_internal(family: HfFamily, hf_state: StateDict, hf_config: dict) -> tuple[ModelConfig, StateDict]:
    """(ModelConfig, TencentPretrain state) of an HF state dict and its config.json dict."""
    config = family.config_from_hf(hf_config)
    state = family.weight_map(config).to_internal(family.prepare_external(hf_state, hf_config), source=family.name)
    check_complete(state, expected_keys(config), what=f"HF {family.name} -> TencentPretrain conversion")
    return config, state


def internal_state_to_hf(family: HfFamily, state: StateDict, config: ModelConfig, vocab_size: int) -> tuple[dict, StateDict]:
    """(HF config.json dict, HF state) of a TencentPretrain state."""
    check_complete(state, expected_keys(config), what=f"TencentPretrain {family.name} checkpoint")
    hf_config = family.hf_config(config, vocab_size)
    hf_state = family.weight_map(config).to_external(state, source=family.name)
    return hf_config, family.finish_external(hf_state, hf_config)


def read_hf_directory(path: str) -> tuple[dict, StateDict]:
    """config.json and weights (.safetensors or .bin, single or sharded) of an HF model directory."""
    config_path = os.path.join(path, HF_CONFIG)
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{path}: not an HF model directory (no {HF_CONFIG})")
    with open(config_path, encoding="utf-8") as f:
        return json.load(f), load_state_dict(path)


def convert_hf_to_tencentpretrain(family: HfFamily, input_dir: str, output_model_path: str,
                                  output_config_path: str | None = None) -> ModelConfig:
    """Convert an HF directory into a TencentPretrain checkpoint (+ its JSON config when a path is given)."""
    hf_config, hf_state = read_hf_directory(input_dir)
    config, state = hf_state_to_internal(family, hf_state, hf_config)
    save_file(state, output_model_path)
    if output_config_path:
        save_model_config(config, output_config_path)
    logger.info("converted %d HF %s tensors into %s", len(hf_state), family.name, output_model_path)
    return config


def convert_tencentpretrain_to_hf(family: HfFamily, input_model_path: str, config: ModelConfig, output_dir: str) -> None:
    """Write an HF directory (config.json + model.safetensors) from a TencentPretrain checkpoint."""
    state = load_state_dict(input_model_path)
    vocab_size = config.vocab_size or _vocab_rows(state, config)
    hf_config, hf_state = internal_state_to_hf(family, state, config, vocab_size)
    os.makedirs(output_dir, exist_ok=True)
    save_file(hf_state, os.path.join(output_dir, "model.safetensors"))
    write_json(os.path.join(output_dir, HF_CONFIG), hf_config)
    logger.info("wrote HF %s model to %s", family.name, output_dir)


def _vocab_rows(state: StateDict, config: ModelConfig) -> int:
    word = state.get(word_embedding_key(config) or "")
    return int(word.shape[0]) if word is not None else 0


def hf_to_tencentpretrain_main(family: HfFamily, argv: list[str] | None = None) -> None:
    """CLI of ``scripts/convert_<family>_from_huggingface_to_tencentpretrain.py``."""
    import argparse

    parser = argparse.ArgumentParser(description=f"Convert an HF {family.name} directory to TencentPretrain.")
    parser.add_argument("--input_model_path", required=True, help="HF directory (config.json + weights)")
    parser.add_argument("--output_model_path", required=True, help="TencentPretrain checkpoint (.bin or .safetensors)")
    parser.add_argument("--output_config_path", help="also write the model's TencentPretrain JSON config here")
    args = parser.parse_args(argv)
    convert_hf_to_tencentpretrain(family, args.input_model_path, args.output_model_path, args.output_config_path)


def tencentpretrain_to_hf_main(family: HfFamily, argv: list[str] | None = None) -> None:
    """CLI of ``scripts/convert_<family>_from_tencentpretrain_to_huggingface.py``."""
    import argparse

    from tencentpretrain.config import load_model_config

    parser = argparse.ArgumentParser(description=f"Convert a TencentPretrain {family.name} checkpoint to HF.")
    parser.add_argument("--input_model_path", required=True, help="TencentPretrain checkpoint")
    parser.add_argument("--config_path", required=True, help="its TencentPretrain JSON config")
    parser.add_argument("--output_model_path", required=True, help="HF output directory")
    args = parser.parse_args(argv)
    config = load_model_config(args.config_path)
    convert_tencentpretrain_to_hf(family, args.input_model_path, config, args.output_model_path)
