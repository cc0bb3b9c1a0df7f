"""Resizing a checkpoint to an extended vocabulary (after ``tencentpretrain.vocab.merge``).

The embedding and LM-head rows of the base vocabulary are kept as they are; each new row is the mean of the rows
of the base pieces that encoded the new piece's text before the extension (Chinese-LLaMA-2's rule). A new
piece whose text the base tokenizer cannot encode without ``<unk>`` gets the mean of all base rows, and so do the
optional padding rows that round the row count up to a multiple.

Works on a single ``.bin`` / ``.safetensors`` file or a sharded directory (index + shards, TencentPretrain or HF
key names); shards without vocabulary rows are copied byte for byte. The model config (``x_config.json`` beside
``x.bin``, or ``config.json`` / ``tencentpretrain_config.json`` in a directory) is written beside the output with
``vocab_size`` updated. Next to the output a JSON record
(``vocab_extension.json`` in a directory, ``<file>.vocab_extension.json`` beside a file) keeps the original
vocabulary size, so training can tell old rows from new ones (``tencentpretrain.vocab.freeze``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tencentpretrain.atomic import atomic_path, write_json
from tencentpretrain.checkpoint import (
    INDEX_NAMES,
    checkpoint_files,
    config_path_beside,
    load_file,
    save_file,
)
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.models.capabilities import registered_vocabulary_keys
from tencentpretrain.tokenizers.base import file_sha256
from tencentpretrain.vocab.merge import check_extension, load_model_proto, piece_text, processor_for

logger = logging.getLogger(__name__)

# Tensors of an HF LLaMA checkpoint whose first dimension is the vocabulary. TencentPretrain keys come from what
# the registered components declare (``vocab_row_keys``).
HF_VOCAB_ROW_KEYS: tuple[str, ...] = ("model.embed_tokens.weight", "lm_head.weight")
RECORD_NAME = "vocab_extension.json"
MEAN_RULE = "mean of the rows of the base pieces encoding the new piece's text; otherwise mean of all base rows"
# Carried over from a sharded directory (HF, or TencentPretrain blocks), vocab_size updated.
COPIED_DIR_FILES = ("config.json", "generation_config.json", "tencentpretrain_config.json")


@dataclass(frozen=True, kw_only=True)
class ResizeConfig:
    """Which checkpoint to resize, to which tokenizer."""

    input_model_path: str  # .bin / .safetensors file or sharded directory
    output_model_path: str  # a file for a file input (format by suffix), a directory for a directory input
    base_spm_model_path: str  # the tokenizer the checkpoint was trained with
    spm_model_path: str  # the extended tokenizer (its first pieces are the base pieces)
    pad_to_multiple_of: int = 1  # round the row count up to a multiple of this (e.g. 64 for tensor cores)
    config_path: str | None = None  # model JSON config; default: the one beside the input (x.bin -> x_config.json)

    def __post_init__(self) -> None:
        if self.pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")
        if os.path.abspath(self.input_model_path) == os.path.abspath(self.output_model_path):
            raise ConfigError("output_model_path must differ from input_model_path (the input is never overwritten)")


@dataclass(frozen=True)
class RowPlan:
    """How each row of the resized tables is made.

    Row ``i < original_vocab_size`` is copied; row ``original_vocab_size + j`` (a new piece) is the mean of the
    base rows ``sources[j]`` (all base rows when empty); rows from ``vocab_size`` to ``rows`` are padding.
    """

    original_vocab_size: int
    vocab_size: int
    rows: int
    sources: tuple[tuple[int, ...], ...]

    @property
    def fallback_ids(self) -> list[int]:
        """New ids initialised with the mean of all rows."""
        return [self.original_vocab_size + j for j, src in enumerate(self.sources) if not src]


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def plan_new_rows(base_spm_model_path: str, spm_model_path: str, *, pad_to_multiple_of: int = 1) -> RowPlan:
    """Check that the new tokenizer extends the base one and find, per new piece, the base ids of its text."""
    base, merged = load_model_proto(base_spm_model_path), load_model_proto(spm_model_path)
    check_extension(base, merged, base_name=base_spm_model_path, merged_name=spm_model_path)
    encoder = processor_for(base, piece_text_mode=True)  # the piece's own "▁" stands for its space
    unk = encoder.unk_id()
    sources = []
    for i in range(len(base.pieces), len(merged.pieces)):
        ids = encoder.encode(piece_text(merged.pieces[i].piece))
        sources.append(tuple(ids) if ids and unk not in ids else ())
    return RowPlan(
        original_vocab_size=len(base.pieces),
        vocab_size=len(merged.pieces),
        rows=round_up(len(merged.pieces), pad_to_multiple_of),
        sources=tuple(sources),
    )


@torch.no_grad()
def resize_rows(weight: torch.Tensor, plan: RowPlan, *, name: str = "tensor") -> torch.Tensor:
    """``weight`` (V, ...) with V >= original_vocab_size -> (plan.rows, ...) by the plan's rules.

    Rows past ``original_vocab_size`` in the input (padding of the base checkpoint) are dropped. Means are taken
    in float32 and cast back to the input dtype.
    """
    old = plan.original_vocab_size
    if weight.shape[0] < old:
        raise CheckpointError(
            f"{name} has {weight.shape[0]} rows but the base tokenizer has {old} pieces: "
            "pass the tokenizer this checkpoint was trained with as --base_spm_model_path"
        )
    base_rows = weight[:old].float()  # (V_old, ...)
    fallback = base_rows.mean(dim=0)  # (...)
    out = torch.empty((plan.rows, *weight.shape[1:]), dtype=torch.float32)
    out[:old] = base_rows
    for j, src in enumerate(plan.sources):
        out[old + j] = base_rows[list(src)].mean(dim=0) if src else fallback
    out[plan.vocab_size:] = fallback
    return out.to(weight.dtype)


def vocab_row_keys() -> list[str]:
    """Keys whose first dimension is the vocabulary: those any registered component declares (word embedding
    first), then HF LLaMA's. A checkpoint is resized without its config, so every declared key is looked for."""
    return registered_vocabulary_keys() + list(HF_VOCAB_ROW_KEYS)


def resize_state_dict(state: Mapping[str, torch.Tensor], plan: RowPlan, *, source: str) -> dict[str, torch.Tensor]:
    """A copy of ``state`` with every vocabulary tensor (``vocab_row_keys()``) resized by ``plan``."""
    out = dict(state)
    for key in _vocab_keys(state):
        out[key] = resize_rows(out[key], plan, name=f"{source}: {key}")
    return out


# ---------------------------------------------------------------------- files
def extension_record_path(model_path: str) -> str:
    """Where the record of a resized checkpoint lives: inside a directory, beside a file."""
    if os.path.isdir(model_path):
        return os.path.join(model_path, RECORD_NAME)
    return f"{model_path}.{RECORD_NAME}"


def read_extension_record(model_path: str) -> dict:
    """The record written by ``resize_checkpoint`` for the checkpoint at ``model_path``."""
    path = extension_record_path(model_path)
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} not found: {model_path} was not resized by scripts/resize_vocab.py; pass the original "
            "vocabulary size explicitly (--original_vocab_size)"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the vocabulary-extension record ({e})") from None
    if not isinstance(record.get("original_vocab_size"), int):
        raise CheckpointError(f"{path}: no integer original_vocab_size in the record")
    return record


def _vocab_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    return [k for k in vocab_row_keys() if k in state]


def _resize_file(src: str, dst: str, plan: RowPlan) -> tuple[list[str], int]:
    """Resize one weight file into ``dst``; return (resized keys, change of the byte size)."""
    state = load_file(src)
    keys = _vocab_keys(state)
    if not keys:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        return [], 0
    resized = resize_state_dict(state, plan, source=src)
    save_file(resized, dst)
    delta = sum((resized[k].numel() - state[k].numel()) * state[k].element_size() for k in keys)
    return keys, delta


def _resize_directory(config: ResizeConfig, plan: RowPlan) -> list[str]:
    """Resize every shard of a directory checkpoint; rewrite its index and config.json."""
    src_dir, dst_dir = config.input_model_path, config.output_model_path
    os.makedirs(dst_dir, exist_ok=True)
    keys, delta = [], 0
    for shard in checkpoint_files(src_dir):
        name = os.path.relpath(shard, src_dir)
        shard_keys, shard_delta = _resize_file(shard, os.path.join(dst_dir, name), plan)
        keys += shard_keys
        delta += shard_delta
    for index_name in INDEX_NAMES:  # written after the shards, as StateWriter does
        index_path = os.path.join(src_dir, index_name)
        if os.path.isfile(index_path):
            with open(index_path, encoding="utf-8") as f:
                index = json.load(f)
            if "total_size" in index.get("metadata", {}):
                index["metadata"]["total_size"] += delta
            write_json(os.path.join(dst_dir, index_name), index)
    for name in COPIED_DIR_FILES:
        if os.path.isfile(os.path.join(src_dir, name)):
            write_resized_config(os.path.join(src_dir, name), os.path.join(dst_dir, name), plan)
    return keys


def write_resized_config(src: str, dst: str, plan: RowPlan) -> None:
    """Copy a JSON config, with ``vocab_size`` set to the new row count (added when the rows are padded)."""
    try:
        with open(src, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{src}: cannot read the model config ({e})") from None
    if data.get("vocab_size") is not None or plan.rows != plan.vocab_size:
        data["vocab_size"] = plan.rows
    write_json(dst, data)


def resize_checkpoint(config: ResizeConfig) -> dict:
    """Resize the checkpoint's vocabulary tables to the extended tokenizer and write the output and its record.

    Returns:
        The record written next to the output (original and new vocabulary size, rows, tokenizer hashes, ...).
    """
    plan = plan_new_rows(config.base_spm_model_path, config.spm_model_path,
                         pad_to_multiple_of=config.pad_to_multiple_of)
    model_config = _model_config_path(config)
    source_rows = _source_rows(config.input_model_path)
    if source_rows > plan.original_vocab_size:
        logger.warning(
            "%s has %d vocabulary rows, the base tokenizer %d pieces: rows %d..%d are treated as padding and "
            "replaced", config.input_model_path, source_rows, plan.original_vocab_size,
            plan.original_vocab_size, source_rows - 1,
        )
    if os.path.isdir(config.input_model_path):
        keys = _resize_directory(config, plan)
    else:
        if os.path.isdir(config.output_model_path):
            raise ConfigError(f"{config.output_model_path} is a directory; the input is a file, so name a file")
        keys, _ = _resize_file(config.input_model_path, config.output_model_path, plan)
    if model_config:
        write_resized_config(model_config, config_path_beside(config.output_model_path.rstrip("/")), plan)
    record = _record(config, plan, keys, source_rows)
    write_json(extension_record_path(config.output_model_path), record)
    logger.info(
        "resized %s: %d -> %d rows (%d new pieces, %d from the mean of all rows, %d padding) -> %s",
        ", ".join(keys), source_rows, plan.rows, plan.vocab_size - plan.original_vocab_size,
        len(plan.fallback_ids), plan.rows - plan.vocab_size, config.output_model_path,
    )
    return record


def _model_config_path(config: ResizeConfig) -> str | None:
    """The JSON config to carry over: the one given, else the one beside a file input (None if there is none)."""
    if config.config_path:
        if not os.path.isfile(config.config_path):
            raise ConfigError(f"{config.config_path}: model config not found")
        return config.config_path
    if os.path.isdir(config.input_model_path):
        return None  # a directory's own config files are carried over with its shards
    beside = config_path_beside(config.input_model_path)
    return beside if os.path.isfile(beside) else None


def _source_rows(path: str) -> int:
    """Rows of the checkpoint's embedding (the first vocabulary tensor found)."""
    for file in checkpoint_files(path):
        state = load_file(file)
        keys = _vocab_keys(state)
        if keys:
            return state[keys[0]].shape[0]
    raise CheckpointError(
        f"{path}: no vocabulary tensor found (looked for {', '.join(vocab_row_keys())})"
    )


def _record(config: ResizeConfig, plan: RowPlan, keys: list[str], source_rows: int) -> dict:
    return {
        "original_vocab_size": plan.original_vocab_size,
        "vocab_size": plan.vocab_size,
        "rows": plan.rows,
        "pad_to_multiple_of": config.pad_to_multiple_of,
        "source_rows": source_rows,
        "resized_keys": keys,
        "init": MEAN_RULE,
        "fallback_ids": plan.fallback_ids,
        "base_tokenizer": {"path": config.base_spm_model_path, "sha256": file_sha256(config.base_spm_model_path)},
        "tokenizer": {"path": config.spm_model_path, "sha256": file_sha256(config.spm_model_path)},
        "source_checkpoint": config.input_model_path,
    }

