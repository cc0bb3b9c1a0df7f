"""Same keys, new layout: change the dtype of a checkpoint, split it into blocks, or merge a LoRA file into it.

All three stream: one tensor (safetensors) or one memory-mapped shard (.bin) is read at a time, and a sharded
output is flushed block by block. With a config, the key set and shapes are checked against the model first.
"""

from __future__ import annotations

import logging
import os

import torch

from tencentpretrain.checkpoint import is_directory_output, load_file
from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.stream import (
    TENCENTPRETRAIN_BLOCKS,
    StateWriter,
    cast,
    expected_shapes,
    iter_tensors,
    list_keys,
    staged_output,
)
from tencentpretrain.convert.weight_map import check_complete
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.models.capabilities import word_embedding_key
from tencentpretrain.vocab.check import check_vocab_sizes

logger = logging.getLogger(__name__)


def check_against_config(path: str, config: ModelConfig) -> None:
    """Raise unless the checkpoint at ``path`` has exactly the keys and shapes of the model of ``config``."""
    from tencentpretrain.convert.hf import embedding_rows

    keys = list_keys(path)
    word = word_embedding_key(config)
    rows = embedding_rows(path, keys, word) if word in keys else config.vocab_size
    if rows is not None:
        check_vocab_sizes(tokenizer=None, embedding=rows, config=config.vocab_size, source=path)
    check_complete(keys, expected_shapes(config, rows), what=f"{path} (for the config given)")


def rewrite_checkpoint(
    input_path: str,
    output_path: str,
    *,
    dtype: torch.dtype | None,
    max_shard_bytes: int = 10 * 10**9,
    config: ModelConfig | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Copy a TencentPretrain checkpoint, casting floating tensors to ``dtype`` (None keeps them).

    ``output_path`` ending in ``.bin``/``.safetensors`` is one file; otherwise a directory of
    ``tencentpretrain_model-K.bin`` blocks of at most ``max_shard_bytes`` plus
    ``tencentpretrain_model.bin.index.json`` (staged, replacing it whole; a non-empty one needs ``overwrite``).
    Returns the files written.
    """
    if config is not None:
        check_against_config(input_path, config)
    with staged_output(output_path, overwrite=overwrite) as target:
        writer = StateWriter(target, sharded=is_directory_output(output_path), layout=TENCENTPRETRAIN_BLOCKS,
                             max_shard_bytes=max_shard_bytes, key_order=list(list_keys(input_path)))
        for _, key, tensor in iter_tensors(input_path):
            writer.add(key, cast(tensor, dtype))
            del tensor
        files = writer.close()
    logger.info("wrote %d file(s), %.1f MB", len(files), writer.total_bytes / 1e6)
    return [_final(f, target, output_path) for f in files]


def _final(file: str, target: str, output_path: str) -> str:
    """The path ``file`` (written under ``target``) has once the staged output is in place."""
    return os.path.join(output_path, os.path.relpath(file, target)) if target != output_path else file


def merge_lora_checkpoint(
    base_path: str,
    lora_path: str,
    output_path: str,
    *,
    alpha: float,
    dtype: torch.dtype | None = None,
    config: ModelConfig | None = None,
    max_shard_bytes: int = 10 * 10**9,
    overwrite: bool = False,
) -> list[str]:
    """Fold a LoRA file into its base checkpoint: ``W + B @ A * alpha / r`` for every adapted weight.

    The LoRA file holds ``<module>.lora_A`` (r, in) and ``<module>.lora_B`` (out, r) for each adapted
    ``<module>.weight`` (out, in), as ``lora_state_dict`` saves it. The sum is done in fp32 and cast back to
    the base dtype, as ``LoraLinear.merge`` does. Every adapter must find its base weight and be used once.
    """
    if config is not None:
        check_against_config(base_path, config)
    adapters = _read_adapters(lora_path)
    with staged_output(output_path, overwrite=overwrite) as target:
        writer = StateWriter(target, sharded=is_directory_output(output_path), layout=TENCENTPRETRAIN_BLOCKS,
                             max_shard_bytes=max_shard_bytes, key_order=list(list_keys(base_path)))
        for _, key, tensor in iter_tensors(base_path):
            if "lora_" in key:
                raise CheckpointError(f"{base_path}: {key} is a LoRA tensor; pass the base model as "
                                      "--input_model_path")
            module = key[: -len(".weight")] if key.endswith(".weight") else None
            if module in adapters:
                tensor = _merge_one(key, tensor, *adapters.pop(module), alpha=alpha, source=lora_path)
            writer.add(key, cast(tensor, dtype))
            del tensor
        if adapters:
            raise CheckpointError(f"{lora_path}: {len(adapters)} adapters match no weight of {base_path}: "
                                  + ", ".join(sorted(adapters)[:20]))
        files = writer.close()
    return [_final(f, target, output_path) for f in files]


def _read_adapters(lora_path: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module name -> (lora_A, lora_B)."""
    state = load_file(lora_path)
    others = [k for k in state if not k.endswith((".lora_A", ".lora_B"))]
    if others or not state:
        raise CheckpointError(f"{lora_path}: not a LoRA file (expected only *.lora_A / *.lora_B keys; found "
                              f"{', '.join(others[:5]) or 'nothing'})")
    modules = {k.rsplit(".", 1)[0] for k in state}
    unpaired = sorted(m for m in modules if f"{m}.lora_A" not in state or f"{m}.lora_B" not in state)
    if unpaired:
        raise CheckpointError(f"{lora_path}: adapters without both lora_A and lora_B: {', '.join(unpaired[:10])}")
    return {m: (state[f"{m}.lora_A"], state[f"{m}.lora_B"]) for m in modules}


def _merge_one(key: str, weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, *, alpha: float,
               source: str) -> torch.Tensor:
    rank = lora_a.shape[0]
    out_features, in_features = weight.shape
    if lora_a.shape != (rank, in_features) or lora_b.shape != (out_features, rank):
        raise CheckpointError(f"{source}: adapter of {key} has lora_A {tuple(lora_a.shape)} and lora_B "
                              f"{tuple(lora_b.shape)}; the weight is {tuple(weight.shape)}")
    if alpha <= 0:
        raise ConfigError(f"lora_alpha must be positive, got {alpha}")
    delta = lora_b.float() @ lora_a.float() * (alpha / rank)  # (out, r) @ (r, in) -> (out, in)
    return weight + delta.to(weight.dtype)
