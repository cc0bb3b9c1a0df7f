"""Fixtures of the training tests: a tiny dataset built from the test corpus with the tiny sentencepiece model."""

from __future__ import annotations

import os

import pytest

from tests.helpers import REPO_ROOT

SPM = os.path.join(REPO_ROOT, "tests", "assets", "tiny_spm.model")
CORPUS = os.path.join(REPO_ROOT, "tests", "assets", "tiny_spm_corpus.txt")
TINY_CONFIG = os.path.join(REPO_ROOT, "models", "llama", "tiny_config.json")


def build_tiny_dataset(path: str, *, seq_length: int = 32, processor: str = "lm", corpus: str = CORPUS) -> str:
    from tencentpretrain.data.builder import build_dataset
    from tencentpretrain.data.config import DataConfig
    from tencentpretrain.tokenizers import TokenizerConfig

    build_dataset(DataConfig(corpus_path=corpus, dataset_path=path, seq_length=seq_length, data_processor=processor),
                  TokenizerConfig(spm_model_path=SPM))
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    return build_tiny_dataset(str(tmp_path_factory.mktemp("data") / "dataset"))


def train_args(dataset: str, output: str, *extra: str, steps: int = 12, save: int = 6) -> list[str]:
    """A pretrain.py command line for the tiny LLaMA config (GQA, 2 layers) on ``dataset``."""
    return ["--dataset_path", dataset, "--spm_model_path", SPM, "--config_path", TINY_CONFIG,
            "--output_model_path", output, "--total_steps", str(steps), "--save_checkpoint_steps", str(save),
            "--report_steps", "3", "--batch_size", "4", "--learning_rate", "1e-3", *extra]
