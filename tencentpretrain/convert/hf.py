"""HuggingFace directory <-> TencentPretrain checkpoint, shard by shard, for every registered family.

One driver for every family of ``tencentpretrain.convert.families`` (keyed by config.json's ``model_type``),
in both directions; the family gives only its config translation and its declarative weight map.

HF -> TencentPretrain: every size comes from the HF ``config.json``; the key set is checked before any tensor
is read; tensors are converted one at a time (safetensors) or one memory-mapped shard at a time (.bin).
TencentPretrain -> HF: a directory that ``transformers`` loads with ``from_pretrained``: config.json,
safetensors shards + index, generation_config.json (generative families) and, given a SentencePiece model,
the tokenizer files (``hf_tokenizer``). A config the family's HF class cannot compute is refused
(``check_exportable``). Directory outputs are written into a staging directory that replaces the output whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from tencentpretrain.atomic import staged_directory, write_json
from tencentpretrain.checkpoint import config_path_beside, is_directory_output, iter_state_dict
from tencentpretrain.config import ModelConfig, save_model_config
from tencentpretrain.convert.families import family_of, get_family, read_hf_config
from tencentpretrain.convert.hf_family import HfFamily, check_exportable
from tencentpretrain.convert.stream import (
    HF_SAFETENSORS,
    TENCENTPRETRAIN_BLOCKS,
    StateWriter,
    cast,
    expected_shapes,
    iter_tensors,
    list_keys,
)
from tencentpretrain.convert.weight_map import ImportPlan, check_complete
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.models.capabilities import word_embedding_key
from tencentpretrain.vocab.check import EMBEDDING_KEY, check_vocab_sizes

logger = logging.getLogger(__name__)

HF_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
GENERATION_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")

__all__ = ["HfExportOptions", "convert_hf_to_tencentpretrain", "convert_tencentpretrain_to_hf", "embedding_rows",
           "hf_import_plan", "iter_hf_state", "read_hf_config"]


# ---------------------------------------------------------------------------------------------- HF -> TencentPretrain
def _family_for(hf: dict, source: str, expected: str | None) -> HfFamily:
    family = family_of(hf, source)
    if expected is not None and family.model_type != expected:
        raise ConfigError(f"{source} holds an HF {family.name} model (model_type {family.model_type!r}), not "
                          f"{get_family(expected).name}; use scripts/convert_{family.model_type}_from_huggingface_to_"
                          "tencentpretrain.py (or scripts/convert_from_huggingface_to_tencentpretrain.py)")
    return family


def hf_import_plan(input_dir: str, family: str | None = None) -> tuple[HfFamily, ModelConfig, ImportPlan]:
    """(family, ModelConfig, checked import plan) of an HF directory, from its config.json and key names alone.

    Every key is accounted for (unknown ones raise, listed) and every key the TencentPretrain model needs is
    produced, before any tensor is read. ``family``: the model_type the caller expects (None: any registered).
    """
    hf = read_hf_config(input_dir)
    fam = _family_for(hf, input_dir, family)
    config = fam.config_from_hf(hf)
    plan = fam.weight_map(config, hf).import_plan(list_keys(input_dir), source=input_dir)
    check_complete(plan.internal_keys(), expected_shapes(config), what=f"{input_dir} -> TencentPretrain")
    return fam, config, plan


def convert_hf_to_tencentpretrain(
    input_dir: str,
    output_path: str,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 10 * 10**9,
    config_path: str | None = None,
    family: str | None = None,
    overwrite: bool = False,
) -> ModelConfig:
    """Convert the HF model in ``input_dir`` (any registered family) to a TencentPretrain checkpoint.

    ``output_path`` ending in ``.bin``/``.safetensors`` is one file; anything else is a directory of
    TencentPretrain blocks with an index (written through a staging directory; a non-empty one is refused
    unless ``overwrite``). The JSON config is written to ``config_path`` (default: beside the output, see
    ``config_path_beside``). ``family``: refuse any other model_type. Returns the config.
    """
    fam, config, plan = hf_import_plan(input_dir, family)
    shapes = expected_shapes(config)
    _check_hf_vocab(input_dir, config)
    if not is_directory_output(output_path):
        writer = _write_internal(input_dir, output_path, plan, shapes, dtype, max_shard_bytes)
        save_model_config(config, config_path or config_path_beside(output_path))
    else:
        with staged_directory(output_path, overwrite=overwrite) as staging:
            writer = _write_internal(input_dir, staging, plan, shapes, dtype, max_shard_bytes)
            if config_path is None:  # beside a directory = inside it: staged with the weights
                save_model_config(config, config_path_beside(staging))
        if config_path is not None:
            save_model_config(config, config_path)
    logger.info("wrote %s from HF %s (%d tensors, %.1f MB)", output_path, fam.name, len(writer.keys),
                writer.total_bytes / 1e6)
    return config


def _write_internal(input_dir: str, output_path: str, plan: ImportPlan, shapes: dict[str, torch.Size],
                    dtype: torch.dtype | None, max_shard_bytes: int) -> StateWriter:
    writer = StateWriter(output_path, sharded=is_directory_output(output_path), layout=TENCENTPRETRAIN_BLOCKS,
                         max_shard_bytes=max_shard_bytes, key_order=list(shapes))
    for file, key, tensor in iter_tensors(input_dir):
        for internal, converted in plan.convert(key, tensor).items():
            converted = cast(converted, dtype)
            _check_shape(internal, converted, shapes, file)
            writer.add(internal, converted)
        del tensor
    writer.close()
    return writer


def iter_hf_state(path: str, config: ModelConfig | None = None) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """Yield (file, state_dict with TencentPretrain keys) per shard of the HF directory at ``path``.

    ``config`` (the run's) must describe the same architecture as the directory's config.json where the weight
    map depends on it (head counts); None takes the directory's own.
    """
    hf = read_hf_config(path)
    fam = family_of(hf, path)
    plan = fam.weight_map(config or fam.config_from_hf(hf), hf).import_plan(list_keys(path), source=path)
    for file, shard in iter_state_dict(path):
        out: dict[str, torch.Tensor] = {}
        for key in list(shard):
            out.update(plan.convert(key, shard.pop(key)))
        yield file, out


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
    if os.path.isfile(spm) and config.vocab_size:
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
    family: str = "llama"  # the HF model_type to write
    overwrite: bool = False  # replace a non-empty output directory whole


def convert_tencentpretrain_to_hf(
    input_path: str, output_dir: str, config: ModelConfig, options: HfExportOptions = HfExportOptions()
) -> None:
    """Write ``output_dir`` so that the HF class of ``options.family`` loads it with ``from_pretrained``.

    Everything is checked before anything is written: the vocabulary sizes, the key set and shapes, and that the
    family's HF class computes what ``config`` computes. The directory is staged and replaces ``output_dir``
    whole; a non-empty ``output_dir`` is refused unless ``options.overwrite``.
    """
    family = get_family(options.family)
    keys = list_keys(input_path)
    word_key = word_embedding_key(config)
    has_word = word_key is not None and word_key in keys
    rows = embedding_rows(input_path, keys, word_key) if has_word else config.vocab_size
    sp = _tokenizer_for(options.spm_model_path)
    if has_word:
        check_vocab_sizes(tokenizer=sp.get_piece_size() if sp else None, embedding=rows, config=config.vocab_size,
                          source=input_path, allow_padding=options.allow_vocab_padding)
    shapes = expected_shapes(config, rows)
    check_complete(keys, shapes, what=f"{input_path} (for the config given)")
    hf = check_exportable(family, config, rows)
    plan = family.weight_map(config, hf).export_plan(keys, source=input_path, drop_ties=True)
    with staged_directory(output_dir, overwrite=options.overwrite) as staging:
        writer = StateWriter(staging, sharded=True, layout=HF_SAFETENSORS, max_shard_bytes=options.max_shard_bytes)
        dtype_seen = None
        for file, key, tensor in iter_tensors(input_path):
            _check_shape(key, tensor, shapes, file)
            for name, converted in plan.convert(key, tensor).items():
                converted = cast(converted, options.dtype)
                dtype_seen = dtype_seen or (converted.dtype if converted.is_floating_point() else None)
                writer.add(name, converted)
            del tensor
        plan.finish()
        writer.close()
        _write_hf_metadata(staging, family, hf, config, options, dtype_seen)
    logger.info("wrote HF %s model to %s", family.name, output_dir)


def embedding_rows(path: str, keys: dict[str, str], key: str = EMBEDDING_KEY) -> int:
    """Rows of the word embedding ``key`` (default LLaMA's; ``capabilities.word_embedding_key(config)`` for any
    model) of the checkpoint at ``path`` (read from headers / a memory map)."""
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


def _write_hf_metadata(output_dir: str, family: HfFamily, hf: dict, config: ModelConfig, options: HfExportOptions,
                       dtype: torch.dtype | None) -> None:
    """config.json, generation_config.json (generative families) and, with a tokenizer, the tokenizer files."""
    hf = dict(hf)
    if options.spm_model_path:
        from tencentpretrain.convert.hf_tokenizer import write_hf_tokenizer

        specials = write_hf_tokenizer(options.spm_model_path, output_dir, chat_template=options.chat_template,
                                      model_max_length=config.max_seq_length)
        ids = {"bos_token_id": specials.id("bos"), "eos_token_id": specials.id("eos"),
               "pad_token_id": specials.id("pad")}
        hf.update({k: v for k, v in ids.items() if v is not None})
    elif family.generation_config:
        logger.warning("no --spm_model_path: %s gets no tokenizer files", output_dir)
    if dtype in HF_DTYPE_NAMES:
        hf["torch_dtype"] = HF_DTYPE_NAMES[dtype]  # transformers 4.x reads torch_dtype, 5.x reads either
    write_json(os.path.join(output_dir, "config.json"), hf)
    if family.generation_config:
        # No max_length: generate() would warn about it on every call that passes max_new_tokens; the context
        # length is config.json's max_position_embeddings.
        write_json(os.path.join(output_dir, "generation_config.json"), {k: hf[k] for k in GENERATION_IDS if k in hf})
