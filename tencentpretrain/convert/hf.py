"""HuggingFace LLaMA directory <-> TencentPretrain checkpoint, shard by shard, through ``llama_hf_weight_map``.

HF -> TencentPretrain: every size comes from the HF ``config.json``; the key set is checked before any tensor
is read; tensors are converted one at a time (safetensors) or one memory-mapped shard at a time (.bin).
TencentPretrain -> HF: a directory that ``transformers`` loads with ``from_pretrained``: config.json,
safetensors shards + index, generation_config.json, and the tokenizer files (``hf_tokenizer``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import torch

from tencentpretrain.atomic import write_json
from tencentpretrain.checkpoint import config_path_beside, is_directory_output
from tencentpretrain.config import ModelConfig, save_model_config
from tencentpretrain.convert.llama_hf import hf_config_from_model_config, llama_hf_weight_map, model_config_from_hf
from tencentpretrain.convert.stream import (
    HF_SAFETENSORS,
    TENCENTPRETRAIN_BLOCKS,
    StateWriter,
    cast,
    expected_shapes,
    iter_tensors,
    list_keys,
)
from tencentpretrain.convert.weight_map import check_complete
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.models.capabilities import tied_keys
from tencentpretrain.vocab.check import EMBEDDING_KEY, check_vocab_sizes

logger = logging.getLogger(__name__)

HF_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def read_hf_config(directory: str) -> dict:
    """The ``config.json`` of an HF model directory, with errors that say what is wrong."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{directory}: not an HF model directory (no config.json)")
    with open(path, encoding="utf-8") as f:
        hf = json.load(f)
    if hf.get("model_type") not in ("llama", None) and "LlamaForCausalLM" not in hf.get("architectures", []):
        raise ConfigError(f"{path}: model_type {hf.get('model_type')!r} is not a LLaMA model")
    return hf


def convert_hf_to_tencentpretrain(
    input_dir: str,
    output_path: str,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 10 * 10**9,
    config_path: str | None = None,
) -> ModelConfig:
    """Convert the HF LLaMA in ``input_dir`` to a TencentPretrain checkpoint at ``output_path``.

    ``output_path`` ending in ``.bin``/``.safetensors`` is one file; anything else is a directory of
    TencentPretrain blocks with an index. The JSON config is written to ``config_path`` (default: beside the
    output, see ``config_path_beside``). Returns the config.
    """
    config = model_config_from_hf(read_hf_config(input_dir))
    weight_map = llama_hf_weight_map(config)
    plan = weight_map.internal_keys(list_keys(input_dir), source=input_dir)  # all unknown keys, listed, up front
    shapes = expected_shapes(config)
    produced = set(plan.values())
    ties = {k: source for k, source in tied_keys(config).items() if k not in produced}  # HF stores them once
    check_complete(produced | set(ties), shapes, what=f"{input_dir} -> TencentPretrain")
    _check_hf_vocab(input_dir, config)

    writer = StateWriter(output_path, sharded=is_directory_output(output_path), layout=TENCENTPRETRAIN_BLOCKS,
                         max_shard_bytes=max_shard_bytes, key_order=list(shapes))
    for file, key, tensor in iter_tensors(input_dir):
        if key not in plan:
            continue  # an ignored buffer (rotary_emb.inv_freq)
        internal = plan[key]
        converted = cast(weight_map.to_internal({key: tensor}, source=file)[internal], dtype)
        _check_shape(internal, converted, shapes, file)
        writer.add(internal, converted)
        for tied in [k for k, source in ties.items() if source == internal]:
            writer.add(tied, converted.clone())
        del tensor, converted
    writer.close()
    save_model_config(config, config_path or config_path_beside(output_path))
    logger.info("wrote %s (%d tensors, %.1f MB)", output_path, len(writer.keys), writer.total_bytes / 1e6)
    return config


def _check_shape(key: str, tensor: torch.Tensor, shapes: dict[str, torch.Size], source: str) -> None:
    if tuple(tensor.shape) != tuple(shapes[key]):
        raise CheckpointError(f"{source}: {key} has shape {tuple(tensor.shape)}, the config implies "
                              f"{tuple(shapes[key])}")


def _check_hf_vocab(input_dir: str, config: ModelConfig) -> None:
    """HF config vocab_size against the tokenizer.model shipped in the directory, when there is one.

    HF checkpoints often add tokens outside tokenizer.model (a [PAD] row), so a smaller tokenizer is allowed.
    The embedding rows themselves are checked against the config through the expected shapes.
    """
    spm = os.path.join(input_dir, "tokenizer.model")
    if os.path.isfile(spm):
        from tencentpretrain.convert.hf_tokenizer import load_sentencepiece

        pieces = load_sentencepiece(spm).get_piece_size()
        check_vocab_sizes(tokenizer=pieces, embedding=config.vocab_size, config=config.vocab_size,
                          source=input_dir, allow_padding=True)


# ---------------------------------------------------------------------------------------------- TencentPretrain -> HF
@dataclass(frozen=True)
class HfExportOptions:
    """What goes into an exported HF directory besides the weights."""

    spm_model_path: str | None = None  # tokenizer.model to ship (None: no tokenizer files)
    chat_template: str | None = None  # Jinja chat template for tokenizer_config.json
    dtype: torch.dtype | None = None  # None keeps the checkpoint's dtype
    max_shard_bytes: int = 5 * 10**9
    allow_vocab_padding: bool = False  # accept a tokenizer smaller than the embedding


def convert_tencentpretrain_to_hf(
    input_path: str, output_dir: str, config: ModelConfig, options: HfExportOptions = HfExportOptions()
) -> None:
    """Write ``output_dir`` so that ``transformers.LlamaForCausalLM.from_pretrained(output_dir)`` loads it."""
    keys = list_keys(input_path)
    rows = embedding_rows(input_path, keys)
    sp = _tokenizer_for(options.spm_model_path)
    check_vocab_sizes(tokenizer=sp.get_piece_size() if sp else None, embedding=rows, config=config.vocab_size,
                      source=input_path, allow_padding=options.allow_vocab_padding)
    shapes = expected_shapes(config, rows)
    check_complete(keys, shapes, what=f"{input_path} (for the config given)")
    weight_map = llama_hf_weight_map(config)
    plan = weight_map.external_keys(keys, source=input_path)
    os.makedirs(output_dir, exist_ok=True)
    writer = StateWriter(output_dir, sharded=True, layout=HF_SAFETENSORS, max_shard_bytes=options.max_shard_bytes)
    tied = tied_keys(config)
    dtype_seen = None
    for file, key, tensor in iter_tensors(input_path):
        if key in tied:
            continue  # HF ties lm_head to embed_tokens itself
        _check_shape(key, tensor, shapes, file)
        converted = cast(weight_map.to_external({key: tensor}, source=file)[plan[key]], options.dtype)
        dtype_seen = dtype_seen or converted.dtype
        writer.add(plan[key], converted)
        del tensor, converted
    writer.close()
    _write_hf_metadata(output_dir, config, rows, options, dtype_seen)


def embedding_rows(path: str, keys: dict[str, str], key: str = EMBEDDING_KEY) -> int:
    """Rows of the word embedding ``key`` (default LLaMA's; ``capabilities.word_embedding_key(config)`` for
    any model) of the checkpoint at ``path`` (read from headers / a memory map)."""
    if key not in keys:
        raise CheckpointError(f"{path}: no {key}: not a TencentPretrain checkpoint of this model")
    file = keys[key]
    if file.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(file, framework="pt") as f:
            return f.get_slice(key).get_shape()[0]
    from tencentpretrain.checkpoint import load_file

    return load_file(file, mmap=True)[key].shape[0]


def _tokenizer_for(spm_model_path: str | None):
    if spm_model_path is None:
        return None
    from tencentpretrain.convert.hf_tokenizer import load_sentencepiece

    return load_sentencepiece(spm_model_path)


def _write_hf_metadata(
    output_dir: str, config: ModelConfig, rows: int, options: HfExportOptions, dtype: torch.dtype | None
) -> None:
    """config.json, generation_config.json and (with a tokenizer) the tokenizer files."""
    bos = eos = pad = None
    if options.spm_model_path:
        from tencentpretrain.convert.hf_tokenizer import write_hf_tokenizer

        specials = write_hf_tokenizer(options.spm_model_path, output_dir, chat_template=options.chat_template,
                                      model_max_length=config.max_seq_length)
        bos, eos, pad = specials.id("bos"), specials.id("eos"), specials.id("pad")
    else:
        logger.warning("no --spm_model_path: %s gets no tokenizer files", output_dir)
    hf = hf_config_from_model_config(config, rows, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                                     dtype=HF_DTYPE_NAMES.get(dtype))
    write_json(os.path.join(output_dir, "config.json"), hf)
    generation = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}
    generation = {k: v for k, v in generation.items() if v is not None}
    write_json(os.path.join(output_dir, "generation_config.json"),
               {**generation, "max_length": config.max_seq_length})
