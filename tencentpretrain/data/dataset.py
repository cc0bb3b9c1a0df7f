"""The on-disk dataset format (version 2; version 1 is read too) and its reader.

A dataset is a directory (``--dataset_path dataset.pt`` names a directory despite the suffix)::

    manifest.json   format name and version, processor and options, tokenizer (sha256 of its file), counts
    tokens.bin      all instances' token ids back to back, little-endian uint16 (vocab <= 65536) or uint32
    loss_mask.bin   one uint8 per token (absent when every token is scored, as for ``lm``):
                    0 = context, 1 = scored, 2 = scored response token (the loader gives it seg 2)
    index.npy       int64 (N + 1,): instance i is tokens[index[i]:index[i + 1]]

Version 2 adds two optional files, named in the manifest's ``files`` (null when absent), for processors whose
records need more than tokens and a loss mask (``bert``, ``mlm``, ``t5``, ``vit``)::

    token_flags.bin one uint8 per token: FLAG_WORD_START (bit 0) marks the first token of a whole-word masking
                    unit, FLAG_SEGMENT_B (bit 1) a token of the second sentence of a pair
    labels.npy      int64 (N,): one class label per instance (``vit``)

and, for image datasets, ``token_dtype`` ``|u1``: ``tokens.bin`` then holds each image's pixels (H, W, C) uint8.
A version 1 dataset is a version 2 dataset without these files, so it is read as it is; the language-model
processors still write version 1, which older readers can read.

For the language-model processors an instance holds at most ``seq_length + 1`` tokens; the loader predicts
``tokens[1:]`` from ``tokens[:-1]``, so the first token of an instance is never a target. The other processors'
collators say how they read their records (``Processor.build_collator``). The token, mask and flag files are
memory-mapped, so a dataset may be far larger than memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tencentpretrain.atomic import write_json
from tencentpretrain.errors import DataError

FORMAT_NAME = "tencentpretrain-dataset"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_FILE = "manifest.json"
TOKENS_FILE = "tokens.bin"
MASK_FILE = "loss_mask.bin"
INDEX_FILE = "index.npy"
FLAGS_FILE = "token_flags.bin"
LABELS_FILE = "labels.npy"
FLAG_WORD_START = 1  # the token starts a whole-word masking unit
FLAG_SEGMENT_B = 2  # the token belongs to the second sentence of a pair

# Values of a record's target marks (the ``tgt_mask`` stream): which target tokens the loss scores.
MASK_CONTEXT = 0  # not scored (prompt, system text, user turns)
MASK_SCORED = 1  # scored, not a response (plain text; prompts under --train_on_prompt)
MASK_RESPONSE = 2  # scored response token (assistant content and its end token); the loader gives it seg 2


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest little-endian unsigned dtype that holds every id of a ``vocab_size`` vocabulary."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (UTF-8, stable key order as given), atomically."""
    write_json(Path(directory) / MANIFEST_FILE, manifest)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the dataset at ``path``, checked for format name and version."""
    path = Path(path)
    if path.is_file():
        raise DataError(
            f"{path} is a file, probably a dataset of the original TencentPretrain (a pickle stream); this version "
            "reads dataset directories: import it with scripts/convert_original_dataset.py (lm, llm_pretrain and "
            "llm_sft records), or run preprocess.py again with --dataset_path pointing to a new location"
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
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise DataError(
            f"{manifest_path}: format version {manifest.get('format_version')} is not supported "
            f"(this version reads {', '.join(map(str, READABLE_VERSIONS))}); run preprocess.py again"
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
        self.token_flags = self._map(files["token_flags"], np.dtype(np.uint8)) if files.get("token_flags") else None
        self.labels = np.load(self.path / files["labels"], mmap_mode="r") if files.get("labels") else None  # (N,)
        expected = int(self.offsets[-1]) if len(self.offsets) else 0
        per_token = [a for a in (self.mask, self.token_flags) if a is not None]
        if len(self.tokens) != expected or any(len(a) != expected for a in per_token):
            raise DataError(f"{self.path}: token files do not match {files['index']} (incomplete copy?)")
        if self.labels is not None and len(self.labels) != len(self):
            raise DataError(f"{self.path}: {files['labels']} does not match {files['index']} (incomplete copy?)")

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

    def flags(self, i: int) -> np.ndarray:
        """(L,) uint8 FLAG_* bits of instance ``i``; a DataError when the dataset has no token flags."""
        if self.token_flags is None:
            raise DataError(f"{self.path}: the dataset has no token flags (built by {self.processor!r})")
        return self.token_flags[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def label(self, i: int) -> int:
        """The class label of instance ``i``; a DataError when the dataset has no labels."""
        if self.labels is None:
            raise DataError(f"{self.path}: the dataset has no labels (built by {self.processor!r})")
        return int(self.labels[i])

    @property
    def options(self) -> dict[str, Any]:
        """The processor options recorded at build time."""
        return dict(self.manifest.get("options", {}))

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
