"""benchmarks/gpu_check.sh --dry_run: every GPU check's code path runs on the CPU at toy sizes, so the script a
GPU session runs has not rotted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

CHECKS = ("device", "train_bf16", "sdpa_flash", "generate_kv_cache", "int8", "int4", "deepspeed_zero3", "server")


@pytest.mark.slow
def test_every_check_passes_in_a_dry_run():
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry_run"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHON": sys.executable},
                          check=False)
    lines = [line for line in done.stdout.splitlines() if line.split(" ", 1)[0] in ("PASS", "FAIL", "SKIP")]
    assert [line.split()[1].rstrip(":") for line in lines] == list(CHECKS), done.stdout + done.stderr[-2000:]
    assert all(line.startswith("PASS") for line in lines), "\n".join(lines)
    assert json.loads(done.stdout.splitlines()[-1]) == {"failed": 0, "dry_run": True, "device": "cpu"}
    assert done.returncode == 0
    train = next(line for line in lines if line.startswith("PASS train_bf16"))
    assert "tokens/s" in train and "MFU" in train


def test_a_failing_check_is_reported_and_the_others_run(tmp_path):
    """--only with the device check on a machine without CUDA and no --dry_run: one FAIL line, exit status 1."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--only", "device"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1
    assert done.stdout.startswith("FAIL device: RuntimeError: no CUDA device visible"), done.stdout
