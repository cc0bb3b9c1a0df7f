"""One way to write a file (``tencentpretrain/atomic.py``), used by every writer of the package."""

from __future__ import annotations

import json
import os
import re

import pytest

from tencentpretrain.atomic import atomic_path, write_bytes, write_json, write_text
from tencentpretrain.config import load_model_config, save_model_config
from tencentpretrain.data.dataset import MANIFEST_FILE, write_manifest
from tests.helpers import REPO_ROOT, tiny_llama_config

PACKAGE = os.path.join(REPO_ROOT, "tencentpretrain")


def leftovers(directory) -> list[str]:
    return [name for name in os.listdir(directory) if name.endswith(".tmp")]


def test_write_json_text_and_bytes(tmp_path):
    path = tmp_path / "sub" / "a.json"  # the directory is made
    write_json(path, {"b": "中文", "a": [1, 2]})
    assert path.read_bytes() == '{\n  "b": "中文",\n  "a": [\n    1,\n    2\n  ]\n}\n'.encode()
    write_text(tmp_path / "t.txt", "line\n")
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "t.txt").read_text() == "line\n" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert leftovers(tmp_path) == leftovers(tmp_path / "sub") == []


def test_written_files_get_the_permissions_of_an_ordinary_file(tmp_path):
    """mkstemp makes its temporary private (0600); a checkpoint or prediction file must be readable by the group
    and others as any file the user creates (umask 022 -> 0644), e.g. on a shared cluster."""
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            open(tmp, "wb").close()
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "state.json"
    write_json(path, {"step": 1})
    with pytest.raises(TypeError):
        write_json(path, {"step": object()})  # not JSON
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write('{"step": 2')  # half written, then the writer dies
        raise RuntimeError("crash")
    assert json.loads(path.read_text()) == {"step": 1}
    assert leftovers(tmp_path) == []


def test_the_model_config_and_the_dataset_manifest_are_written_atomically(tmp_path):
    config_path = tmp_path / "config.json"
    save_model_config(tiny_llama_config(), config_path)
    assert load_model_config(config_path) == tiny_llama_config()
    write_manifest(tmp_path, {"format": "x", "version": 1})
    assert json.loads((tmp_path / MANIFEST_FILE).read_text()) == {"format": "x", "version": 1}
    assert leftovers(tmp_path) == []


def test_no_module_writes_a_temporary_file_of_its_own():
    """A temporary-then-rename written by hand (``open(tmp)`` + ``os.replace``, ``mkstemp``) belongs in
    atomic.py. Renames of whole things already written atomically are allowed where listed."""
    own_renames = {
        "atomic.py",
        os.path.join("convert", "stream.py"),  # shard files written by save_file, renamed to their final names
        os.path.join("training", "checkpointing.py"),  # a checkpoint directory, then its commit mark
        "checkpoint.py",  # move_checkpoint_file: a weight file written atomically, with its checksum
    }
    offenders = []
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            relative = os.path.relpath(path, PACKAGE)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if relative != "atomic.py" and re.search(r"mkstemp|\.tmp\{os\.getpid\(\)\}", text):
                offenders.append(relative)
            if relative not in own_renames and "os.replace(" in text:
                offenders.append(relative)
    assert offenders == []
