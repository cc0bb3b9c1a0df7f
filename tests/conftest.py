"""Shared fixtures: deterministic RNGs, the default dtype restored, and a tiny LLaMA config."""

from __future__ import annotations

import random

import pytest
import torch

from tests.helpers import tiny_llama_config

pytest_plugins = ["tests.strict_deps"]


@pytest.fixture(autouse=True)
def _deterministic():
    random.seed(0)
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture
def tiny_config():
    return tiny_llama_config()
