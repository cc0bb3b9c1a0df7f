"""The on-disk dataset format (version 1) and its reader.

A dataset is a directory (``--dataset_path dataset.pt`` names a directory despite the suffix)::

    manifest.json   format name and version, processor and options, tokenizer (sha256 of its file), counts
    tokens.bin      all instances' token ids back to back, little-endian uint16 (vocab <= 65536) or uint32
    loss_mask.bin   one uint8 per token (absent when every token is scored, as for ``lm``):
                    0 = context, 1 = scored, 2 = scored response token (the loader gives it seg 2)
    index.npy       int64 (N + 1,): instance i is tokens[index[i]:index[i + 1]]

An instance holds at most ``seq_length + 1`` tokens; the loader predicts ``tokens[1:]`` from ``tokens[:-1]``, so
the first token of an instance is never a target. The token and mask files are memory-mapped, so a dataset may
be far larger than memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tencentpretrain.errors import DataError

FORMAT_NAME = "tencentpretrain-dataset"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOKENS_FILE = "tokens.bin"
MASK_FILE = "loss_mask.bin"
INDEX_FILE = "index.npy"


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest little-endian unsigned dtype that holds every id of a ``vocab_size`` vocabulary."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (UTF-8, stable key order as given)."""
    with open(Path(directory) / MANIFEST_FILE, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the dataset at ``path``, checked for format name and version."""
    path = Path(path)
    if path.is_file():
        raise DataError(
            f"{path} is a file, probably a dataset of the original TencentPretrain (a pickle stream); this version "
            "reads dataset directories: run preprocess.py again with --dataset_path pointing to a new location"
        )
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DataError(f"{path}: not a dataset (no {MANIFEST_FILE}); build one with preprocess.py")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{manifest_path}: unreadable manifest ({e})") from None
    if manifest.get("format") != FORMAT_NAME:
        raise DataError(f"{manifest_path}: not a {FORMAT_NAME} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{manifest_path}: format version {manifest.get('format_version')} is not supported "
            f"(this version reads {FORMAT_VERSION}); run preprocess.py again"
        )
    return manifest


class IndexedDataset:
    """Random access to the instances of a dataset directory.

    ``dataset[i]`` is ``(tokens, mask)``: ``tokens`` a (L,) integer array, ``mask`` a (L,) uint8 array of
    loss-mask values or None when every token is scored.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        files = self.manifest["files"]
        self.offsets = np.load(self.path / files["index"], mmap_mode="r")  # (N + 1,) int64
        self.tokens = self._map(files["tokens"], np.dtype(self.manifest["token_dtype"]))
        self.mask = self._map(files["loss_mask"], np.dtype(np.uint8)) if files.get("loss_mask") else None
        expected = int(self.offsets[-1]) if len(self.offsets) else 0
        if len(self.tokens) != expected or (self.mask is not None and len(self.mask) != expected):
            raise DataError(f"{self.path}: token files do not match {files['index']} (incomplete copy?)")

    def _map(self, name: str, dtype: np.dtype) -> np.ndarray:
        file = self.path / name
        if not file.is_file():
            raise DataError(f"{self.path}: missing {name}")
        if file.stat().st_size == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(file, dtype=dtype, mode="r")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.tokens[start:end], None if self.mask is None else self.mask[start:end]

    @property
    def seq_length(self) -> int:
        """The ``--seq_length`` the dataset was built with (instances hold up to one more token)."""
        return int(self.manifest["seq_length"])

    @property
    def pad_id(self) -> int:
        """The tokenizer's pad id recorded at build time (0 when it had none)."""
        pad = self.manifest["tokenizer"].get("pad_id")
        return 0 if pad is None else int(pad)

    @property
    def processor(self) -> str:
        """Canonical name of the processor that built the dataset ("lm", "alpaca", "chat")."""
        return str(self.manifest["processor"])

    @property
    def fingerprint(self) -> str:
        """sha256 of the index file, saved in loader states to detect a different dataset on resume."""
        return str(self.manifest["index_sha256"])
