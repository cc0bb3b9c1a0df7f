"""The suite runs on the CPU even on a GPU machine (tests/conftest.py), and GPU tests are opt-in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import GPU_TESTS


@pytest.mark.skipif(GPU_TESTS, reason="TENCENTPRETRAIN_TEST_GPU=1 shows the GPUs")
def test_the_gpus_are_hidden_from_the_tests_and_their_processes():
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert not torch.cuda.is_available()
    child = subprocess.run([sys.executable, "-c", "import os; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "''"  # inherited by the processes a test starts (torchrun, scripts)


@pytest.mark.gpu
def test_a_gpu_test_sees_a_gpu():
    assert torch.cuda.is_available()
