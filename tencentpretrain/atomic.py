"""Writing files so that a crash never leaves a half-written one: a temporary file beside the target, flushed to
disk, then renamed over it (a rename within a directory is atomic). Every file the package writes goes through
``atomic_path``; ``write_bytes``, ``write_text`` and ``write_json`` cover the common cases, all ``(path, data)``.

This module imports nothing heavy (no torch), so tokenizer and data tools can use it cheaply.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tencentpretrain.errors import ConfigError

logger = logging.getLogger(__name__)


_TMP_PID = re.compile(r"\.tmp-(\d+)(\.bin|\.safetensors)?$")  # the writer's pid, at the end of a temporary's name


@contextmanager
def atomic_path(path: str | os.PathLike, *, cleanup: bool = True) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it is synced and renamed to ``path``, on failure
    removed (``path`` keeps its old content, if it had one).

    The temporary is named ``.<name>.<random>.tmp-<pid>``; with ``cleanup``, those a killed process left for the
    same ``path`` (their process is gone) are removed first.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if cleanup:
        remove_stale_temporaries(directory, f".{os.path.basename(path)}.")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp-{os.getpid()}", dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the output gets the usual permissions
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextmanager
def staged_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """Yield a fresh staging directory beside ``path`` to write a directory output into; on success it replaces
    ``path`` whole (no file of an older output survives), on failure it is removed and ``path`` is untouched.

    A non-empty ``path`` is refused unless ``overwrite``. Staging directories that a killed run left beside
    ``path`` (``.<name>.staging-<random>.tmp-<pid>``, their process gone) are removed first.
    """
    check_output_free(path, overwrite=overwrite)
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.dirname(path), os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(parent, f".{name}.")
    staging = tempfile.mkdtemp(prefix=f".{name}.staging-", suffix=f".tmp-{os.getpid()}", dir=parent)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; the output gets the usual permissions
    if os.path.lexists(path):
        old = tempfile.mkdtemp(prefix=f".{name}.old-", suffix=f".tmp-{os.getpid()}", dir=parent)
        os.replace(path, os.path.join(old, name))  # moved aside first: the swap below is one rename
        os.replace(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, path)


def check_output_free(path: str | os.PathLike, *, overwrite: bool) -> None:
    """Raise a ConfigError unless ``path`` is absent, an empty directory, or ``overwrite`` is set."""
    path = os.fspath(path)
    if overwrite or not os.path.lexists(path) or (os.path.isdir(path) and not os.listdir(path)):
        return
    what = "directory" if os.path.isdir(path) else "file"
    raise ConfigError(f"{path}: the output {what} exists and is not empty; pass --overwrite to replace it whole "
                      "(everything in it is removed), or choose a new output path")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(directory: str, prefix: str = ".") -> list[str]:
    """Remove the ``atomic_path`` temporaries in ``directory`` whose writer process no longer exists (a run
    killed with SIGKILL cannot clean up after itself). Returns what was removed."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*.tmp-*")):
        match = _TMP_PID.search(path)
        if match and not process_alive(int(match.group(1))):
            remove_path(path)
            removed.append(path)
    if removed:
        logger.info("removed %d temporary files left by an interrupted run: %s", len(removed),
                    ", ".join(sorted(removed)))
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_path(path: str) -> None:
    """Remove a file or a directory tree (no error when it is already gone)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


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
