"""Meta LLaMA (``consolidated.NN.pth`` + ``params.json``) <-> TencentPretrain, through ``llama_meta_weight_map``.

Meta's 13B+ checkpoints are split across model-parallel shards: every shard holds a slice of every tensor
(``llama_meta.META_SHARD_DIMS`` says along which dimension). Reading memory-maps all shards and concatenates
tensor by tensor; writing can split again into ``--model_parallel_size`` shards, so a round trip through a
multi-shard layout is testable and bit-exact.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil

import torch

from tencentpretrain.atomic import staged_directory, write_json
from tencentpretrain.checkpoint import config_path_beside, is_directory_output, load_file, save_file
from tencentpretrain.config import ModelConfig, save_model_config
from tencentpretrain.convert.hf import embedding_rows
from tencentpretrain.convert.llama_meta import (
    llama_meta_weight_map,
    meta_params_from_model_config,
    meta_shard_dim,
    model_config_from_meta,
)
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
from tencentpretrain.vocab.check import check_vocab_sizes

logger = logging.getLogger(__name__)

Shards = list[dict[str, torch.Tensor]]


def meta_files(input_path: str) -> tuple[list[str], str]:
    """(the consolidated.NN.pth files in order, params.json) of a Meta checkpoint directory (or one .pth)."""
    if os.path.isfile(input_path):
        files, directory = [input_path], os.path.dirname(input_path)
    else:
        files, directory = sorted(glob.glob(os.path.join(input_path, "consolidated.*.pth"))), input_path
    if not files:
        raise CheckpointError(f"{input_path}: no consolidated.*.pth files (a Meta LLaMA checkpoint directory)")
    params = os.path.join(directory, "params.json")
    if not os.path.isfile(params):
        raise ConfigError(f"{directory}: no params.json next to the Meta checkpoint")
    return files, params


def merge_meta_tensor(key: str, slices: list[torch.Tensor], dim: int) -> torch.Tensor:
    """One tensor from its model-parallel ``slices`` (replicated tensors must be equal in every shard)."""
    split = meta_shard_dim(key, tuple(slices[0].shape), dim)
    if split is None or len(slices) == 1:
        if any(not torch.equal(s, slices[0]) for s in slices[1:]):
            raise CheckpointError(f"{key} should be the same in every Meta shard but differs")
        return slices[0]
    return torch.cat(slices, dim=split)


def _load_shards(files: list[str]) -> Shards:
    shards = [load_file(f, mmap=True) for f in files]
    for file, shard in zip(files[1:], shards[1:], strict=True):
        if set(shard) != set(shards[0]):
            diff = sorted(set(shard) ^ set(shards[0]))[:10]
            raise CheckpointError(f"{file} and {files[0]} hold different keys: {', '.join(diff)}")
    return shards


def _merged_shape(key: str, shards: Shards, dim: int) -> tuple[int, ...]:
    shape = list(shards[0][key].shape)
    split = meta_shard_dim(key, tuple(shape), dim)
    if split is not None:
        shape[split] = sum(s[key].shape[split] for s in shards)
    return tuple(shape)


def convert_meta_to_tencentpretrain(
    input_path: str,
    output_path: str,
    *,
    dtype: torch.dtype | None = None,
    config_path: str | None = None,
    max_shard_bytes: int = 10 * 10**9,
    overwrite: bool = False,
) -> ModelConfig:
    """Merge the Meta checkpoint at ``input_path`` into a TencentPretrain checkpoint (+ JSON config).

    A directory output is staged and replaces ``output_path`` whole; a non-empty one needs ``overwrite``."""
    files, params_path = meta_files(input_path)
    with open(params_path, encoding="utf-8") as f:
        params = json.load(f)
    shards = _load_shards(files)
    weight_map = llama_meta_weight_map()
    plan = weight_map.internal_keys(shards[0], source=files[0])
    vocab = _merged_shape("tok_embeddings.weight", shards, params["dim"])[0]
    ffn = _merged_shape("layers.0.feed_forward.w1.weight", shards, params["dim"])[0]
    config = model_config_from_meta(params, vocab_size=vocab, feedforward_size=ffn)
    _check_meta_tokenizer(files[0], vocab)
    shapes = expected_shapes(config)
    check_complete(plan.values(), shapes, what=f"{input_path} -> TencentPretrain")
    with staged_output(output_path, overwrite=overwrite) as target:
        writer = StateWriter(target, sharded=is_directory_output(output_path), layout=TENCENTPRETRAIN_BLOCKS,
                             max_shard_bytes=max_shard_bytes, key_order=list(shapes))
        for key, internal in plan.items():
            tensor = cast(merge_meta_tensor(key, [s[key] for s in shards], params["dim"]), dtype)
            if tuple(tensor.shape) != tuple(shapes[internal]):
                raise CheckpointError(f"{input_path}: {key} merges to {tuple(tensor.shape)}, params.json implies "
                                      f"{tuple(shapes[internal])}")
            writer.add(internal, tensor)
        writer.close()
        save_model_config(config, config_path or config_path_beside(target))
    return config


def _check_meta_tokenizer(first_file: str, vocab: int) -> None:
    """Meta ships tokenizer.model next to (or one level above) the weights: check it fits, when present."""
    directory = os.path.dirname(os.path.abspath(first_file))
    for candidate in (os.path.join(directory, "tokenizer.model"), os.path.join(directory, "..", "tokenizer.model")):
        if os.path.isfile(candidate):
            from tencentpretrain.convert.hf_tokenizer import load_sentencepiece

            pieces = load_sentencepiece(candidate).get_piece_size()
            check_vocab_sizes(tokenizer=pieces, embedding=vocab, config=None, source=candidate, allow_padding=True)
            return


# ---------------------------------------------------------------------------------------------- TencentPretrain -> Meta
def split_meta_tensor(key: str, tensor: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """``tensor`` cut into ``parts`` model-parallel slices the way Meta's code expects them."""
    split = meta_shard_dim(key, tuple(tensor.shape))
    if split is None or parts == 1:
        return [tensor] * parts
    if tensor.shape[split] % parts:
        raise ConfigError(f"{key}: dimension {split} of size {tensor.shape[split]} does not split into "
                          f"{parts} model-parallel shards")
    return [t.clone() for t in torch.chunk(tensor, parts, dim=split)]


def convert_tencentpretrain_to_meta(
    input_path: str,
    output_dir: str,
    config: ModelConfig,
    *,
    model_parallel_size: int = 1,
    dtype: torch.dtype | None = None,
    spm_model_path: str | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``consolidated.NN.pth`` (``model_parallel_size`` of them) and params.json into ``output_dir``
    (staged, replacing it whole; a non-empty ``output_dir`` needs ``overwrite``)."""
    keys = list_keys(input_path)
    rows = embedding_rows(input_path, keys)
    pieces = _spm_pieces(spm_model_path)
    check_vocab_sizes(tokenizer=pieces, embedding=rows, config=config.vocab_size, source=input_path)
    shapes = expected_shapes(config, rows)
    check_complete(keys, shapes, what=f"{input_path} (for the config given)")
    _check_splittable(config, model_parallel_size)
    params = meta_params_from_model_config(config, rows)
    plan = llama_meta_weight_map().external_keys(keys, source=input_path)
    parts: Shards = [{} for _ in range(model_parallel_size)]
    for _, key, tensor in iter_tensors(input_path):
        external = plan[key]
        pieces = split_meta_tensor(external, cast(tensor, dtype), model_parallel_size)
        for part, piece in zip(parts, pieces, strict=True):
            part[external] = piece
    with staged_directory(output_dir, overwrite=overwrite) as staging:
        for i, part in enumerate(parts):
            save_file(part, os.path.join(staging, f"consolidated.{i:02d}.pth"))
        write_json(os.path.join(staging, "params.json"), params)
        if spm_model_path:
            shutil.copyfile(spm_model_path, os.path.join(staging, "tokenizer.model"))


def _spm_pieces(spm_model_path: str | None) -> int | None:
    if not spm_model_path:
        return None
    from tencentpretrain.convert.hf_tokenizer import load_sentencepiece

    return load_sentencepiece(spm_model_path).get_piece_size()


def _check_splittable(config: ModelConfig, parts: int) -> None:
    if parts < 1:
        raise ConfigError(f"--model_parallel_size must be at least 1, got {parts}")
    for name, value in (("heads_num", config.heads_num), ("kv heads", config.kv_heads_num)):
        if value % parts:
            raise ConfigError(f"{name}={value} is not divisible by --model_parallel_size {parts}")
