"""Writing files so that a crash never leaves a half-written one: a temporary file beside the target, flushed to
disk, then renamed over it (a rename within a directory is atomic). Every file the package writes goes through
``atomic_path``; ``write_bytes``, ``write_text`` and ``write_json`` cover the common cases, all ``(path, data)``.

This module imports nothing heavy (no torch), so tokenizer and data tools can use it cheaply.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it is synced and renamed to ``path``, on failure
    removed (``path`` keeps its old content, if it had one)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _fsync(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` to ``path`` as UTF-8 JSON (non-ASCII kept as is, keys in the order given, a final newline),
    atomically."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
