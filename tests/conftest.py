"""Shared fixtures: deterministic RNGs, the default dtype restored, and a tiny LLaMA config."""

from __future__ import annotations

import os
import random

import pytest
import torch

from tests.helpers import tiny_llama_config

pytest_plugins = ["tests.strict_deps"]

# The suite compares numbers bit for bit on the CPU. On a machine with a GPU, training and inference pick CUDA by
# themselves (and a 2-process test asks a one-GPU machine for cuda:1), so the GPUs are hidden from the tests and the
# processes they start, unless TENCENTPRETRAIN_TEST_GPU=1 asks for the tests marked ``gpu`` (tolerances, not bits).
# Set before anything initialises CUDA, which reads the variable once.
GPU_TESTS = os.environ.get("TENCENTPRETRAIN_TEST_GPU") == "1"
if not GPU_TESTS:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="GPU test: run with TENCENTPRETRAIN_TEST_GPU=1 on a machine with a GPU")
    for item in items:
        if "gpu" in item.keywords and not (GPU_TESTS and torch.cuda.is_available()):
            item.add_marker(skip)


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
