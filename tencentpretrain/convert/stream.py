"""Shard-by-shard tensor I/O shared by the converters, so no converter holds a model twice.

Reading: ``list_keys`` names every tensor of a checkpoint without loading any (safetensors headers, index
files, or a memory-mapped ``.bin``), so a converter can check the whole key set before doing any work;
``iter_tensors`` then yields one tensor at a time (safetensors) or one memory-mapped shard at a time (.bin).

Writing: ``StateWriter`` either collects tensors for one output file or streams them into size-limited shards
with an index (TencentPretrain blocks or HF ``model-0000K-of-0000N.safetensors``). Shards get temporary names
and the index is written last, so an interrupted conversion never leaves a loadable half-checkpoint.
``staged_directory`` gives a directory output a fresh staging directory that replaces the output whole at the
end, so no file of an older conversion survives next to the new ones (and a failed run leaves nothing).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from tencentpretrain.atomic import remove_stale_temporaries, staged_directory, write_json
from tencentpretrain.checkpoint import (
    SAFETENSORS_SUFFIX,
    check_finite,
    checkpoint_files,
    find_index_file,
    is_directory_output,
    load_file,
    read_index,
    recorded_checksums,
    save_file,
    verify_checksum,
)
from tencentpretrain.config import ModelConfig
from tencentpretrain.dtypes import parse_dtype  # noqa: F401  (re-exported: the converters' dtype vocabulary)
from tencentpretrain.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


# ---------------------------------------------------------------------------------------------- small helpers
def parse_size(text: str | int) -> int:
    """``"5GB"``, ``"500MB"``, ``"2GiB"`` or a byte count -> bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    unit = match.group(2).upper() if match else None
    if unit is not None and unit not in _UNITS:
        unit = unit + "B" if unit + "B" in _UNITS else None
    if not match or unit is None:
        raise ConfigError(f"cannot read the size {text!r}; write e.g. 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``tensor`` in ``dtype`` (floating tensors only; None keeps it), contiguous.

    No copy is made when nothing changes: a tensor read from a memory-mapped ``.bin`` then stays backed by the
    file's page cache, so the output shares those pages instead of holding a second copy of the model.
    """
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.contiguous()


def nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def expected_shapes(config: ModelConfig, vocab_size: int | None = None) -> dict[str, torch.Size]:
    """key -> shape of the TencentPretrain model of ``config`` (built on the meta device: no memory)."""
    from tencentpretrain.models.model import build_model

    with torch.device("meta"):
        model = build_model(config, vocab_size, init=False)
    return {key: tensor.shape for key, tensor in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------- reading
def list_keys(path: str) -> dict[str, str]:
    """key -> file of every tensor in the checkpoint at ``path``, without reading tensor data."""
    files = checkpoint_files(path)
    if os.path.isdir(path):
        index = find_index_file(path)
        if index.endswith(".json"):
            return read_index(index)
    keys: dict[str, str] = {}
    for file in files:
        keys.update({key: file for key in _file_keys(file)})
    return keys


def _file_keys(file: str) -> list[str]:
    if file.endswith(SAFETENSORS_SUFFIX):
        from safetensors import safe_open

        try:
            with safe_open(file, framework="pt") as f:
                return list(f.keys())
        except Exception as e:  # SafetensorError derives from Exception only
            raise CheckpointError(f"{file}: cannot read safetensors file ({type(e).__name__}: {e})") from None
    return list(load_file(file, mmap=True, verify=False))  # memory-mapped: only the pickle is read


def iter_tensors(path: str) -> Iterator[tuple[str, str, torch.Tensor]]:
    """Yield ``(file, key, tensor)`` for the checkpoint at ``path``.

    A safetensors file is read one tensor at a time; a ``.bin`` shard is memory-mapped and released before the
    next shard is opened (or, when the caller keeps its tensors, stays mapped: file pages, not a copy).
    """
    checksums = recorded_checksums(path)
    for file in checkpoint_files(path):
        if file.endswith(SAFETENSORS_SUFFIX):
            if file in checksums:
                verify_checksum(file, checksums[file])
            yield from _iter_safetensors(file, check=file not in checksums)
        else:
            shard = load_file(file, mmap=True, expected_sha256=checksums.get(file))
            for key in list(shard):
                yield file, key, shard.pop(key)
            del shard


def _iter_safetensors(file: str, *, check: bool) -> Iterator[tuple[str, str, torch.Tensor]]:
    """One tensor at a time; ``check``: a file without a checksum is scanned for non-finite values."""
    from safetensors import safe_open

    try:
        with safe_open(file, framework="pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if check:
                    check_finite({key: tensor}, source=file)
                yield file, key, tensor
    except CheckpointError:
        raise
    except Exception as e:  # SafetensorError derives from Exception only
        raise CheckpointError(f"{file}: cannot read safetensors file ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class ShardLayout:
    """How a sharded output directory names its files."""

    index_name: str
    shard_pattern: str  # {index} (0-based) and {number}/{count} (1-based, total) placeholders

    def name(self, index: int, count: int) -> str:
        return self.shard_pattern.format(index=index, number=index + 1, count=count)


TENCENTPRETRAIN_BLOCKS = ShardLayout("tencentpretrain_model.bin.index.json", "tencentpretrain_model-{index}.bin")
HF_SAFETENSORS = ShardLayout("model.safetensors.index.json", "model-{number:05d}-of-{count:05d}.safetensors")


class StateWriter:
    """Collects converted tensors and writes them as one file or as size-limited shards plus an index.

    ``sharded=False``: tensors are kept until ``close()``, which writes ``path`` (``.bin``/``.safetensors``)
    in ``key_order`` (then any other keys). ``sharded=True``: ``path`` is a directory; a shard is flushed as
    soon as it reaches ``max_shard_bytes``, so memory stays at about one shard.
    """

    def __init__(
        self,
        path: str,
        *,
        sharded: bool,
        layout: ShardLayout = TENCENTPRETRAIN_BLOCKS,
        max_shard_bytes: int = 10 * 10**9,
        key_order: list[str] | None = None,
        index_metadata: dict | None = None,
    ) -> None:
        self.path, self.sharded, self.layout = path, sharded, layout
        self.max_shard_bytes = max_shard_bytes
        self.key_order = key_order or []
        self.index_metadata = index_metadata or {}
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._written: list[tuple[str, list[str], str]] = []  # (temporary file, keys, sha256)
        self.total_bytes = 0
        self.keys: list[str] = []
        if sharded:
            os.makedirs(path, exist_ok=True)
            remove_stale_temporaries(path, ".part-")  # shards of a killed conversion into the same directory

    def add(self, key: str, tensor: torch.Tensor) -> None:
        if key in self._pending or key in self.keys:
            raise CheckpointError(f"{self.path}: tensor {key} produced twice")
        size = nbytes(tensor)
        if self.sharded and self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self._pending[key] = tensor
        self._pending_bytes += size
        self.total_bytes += size
        self.keys.append(key)

    def _flush(self) -> None:
        suffix = SAFETENSORS_SUFFIX if self.layout.shard_pattern.endswith(SAFETENSORS_SUFFIX) else ".bin"
        tmp = os.path.join(self.path, f".part-{len(self._written):05d}.tmp-{os.getpid()}{suffix}")
        digest = save_file(self._pending, tmp, sidecar=False)
        self._written.append((tmp, list(self._pending), digest))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Write what is pending (and the index); return the files written."""
        if not self.sharded:
            order = [k for k in self.key_order if k in self._pending]
            order += [k for k in self._pending if k not in set(order)]
            save_file({k: self._pending[k] for k in order}, self.path)
            self._pending = {}
            return [self.path]
        if self._pending or not self._written:
            self._flush()
        return self._finish_shards()

    def _finish_shards(self) -> list[str]:
        count, weight_map, names, checksums = len(self._written), {}, [], {}
        for i, (tmp, keys, digest) in enumerate(self._written):
            name = self.layout.name(i, count)
            os.replace(tmp, os.path.join(self.path, name))
            weight_map.update({key: name for key in keys})
            names.append(name)
            checksums[name] = digest
        metadata = {"total_size": self.total_bytes, **self.index_metadata, "sha256": checksums}
        index = {"metadata": metadata, "weight_map": weight_map}
        write_json(os.path.join(self.path, self.layout.index_name), index)
        return [os.path.join(self.path, n) for n in names]






# ---------------------------------------------------------------------------------------------- directory outputs




@contextmanager
def staged_output(path: str, *, overwrite: bool = False) -> Iterator[str]:
    """Where to write the checkpoint ``path``: a staging directory for a directory output (``staged_directory``),
    ``path`` itself for a one-file output (``save_file`` writes it atomically)."""
    if not is_directory_output(path):
        yield path
        return
    with staged_directory(path, overwrite=overwrite) as staging:
        yield staging

