from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tencentpretrain.data.builder import build_dataset
from tencentpretrain.data.config import DataConfig
from tencentpretrain.tokenizers import Tokenizer, TokenizerConfig, build_tokenizer

SPM_PATH = str(Path(__file__).resolve().parents[1] / "assets" / "tiny_spm.model")


@pytest.fixture
def tok() -> Tokenizer:
    return build_tokenizer(spm_model_path=SPM_PATH)


def write_corpus(path: Path, lines: list[Any] | bytes) -> Path:
    """Write ``lines`` (strings, or objects written as JSON) one per line; bytes are written as they are."""
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        text = "".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines)
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def build(tmp_path: Path) -> Callable[..., Path]:
    """``build(lines, name="ds.pt", chunk_bytes=None, **DataConfig fields) -> dataset path``."""

    def run(lines: list[Any] | bytes, name: str = "ds.pt", chunk_bytes: int | None = None, **options: Any) -> Path:
        corpus = write_corpus(tmp_path / f"{name}.corpus", lines)
        config = DataConfig(corpus_path=str(corpus), dataset_path=str(tmp_path / name), **options)
        build_dataset(config, TokenizerConfig(spm_model_path=SPM_PATH), chunk_bytes=chunk_bytes)
        return tmp_path / name

    return run


@pytest.fixture
def spm_path() -> str:
    return SPM_PATH


@pytest.fixture
def corpus_writer() -> Callable[[Path, list[Any] | bytes], Path]:
    return write_corpus
