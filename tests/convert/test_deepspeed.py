"""A DeepSpeed ZeRO-1/2/3 checkpoint (two CPU ranks, made here) -> one TencentPretrain file, equal to the engine's
gathered fp32 weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from scripts import convert_deepspeed_to_tencentpretrain as ds_script
from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.config import save_model_config
from tencentpretrain.convert.deepspeed_checkpoint import resolve_tag
from tencentpretrain.errors import CheckpointError, TencentPretrainError
from tests.convert.common import assert_same_state
from tests.helpers import REPO_ROOT, tiny_llama_config

pytest.importorskip("deepspeed")
WORLD_SIZE = 2


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("deepspeed"))
    script, port = os.path.join(os.path.dirname(__file__), "ds_tiny_run.py"), _free_port()
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, script, out, str(r), str(WORLD_SIZE), port], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(WORLD_SIZE)]
    logs = [p.communicate(timeout=240)[0] for p in ranks]
    if any(p.returncode for p in ranks):
        pytest.fail("the DeepSpeed run failed:\n" + "\n".join(log[-3000:] for log in logs))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_checkpoint_to_one_file(checkpoints, tmp_path, stage):
    directory = os.path.join(checkpoints, f"zero{stage}")
    assert len([f for f in os.listdir(os.path.join(directory, "step1")) if "optim_states" in f]) == WORLD_SIZE
    config_path = str(tmp_path / "config.json")
    save_model_config(tiny_llama_config(vocab_size=100), config_path)
    out = str(tmp_path / "model.bin")
    assert ds_script.main(["--input_model_path", directory, "--output_model_path", out,
                           "--config_path", config_path]) == 0
    expected = torch.load(os.path.join(directory, "expected.pt"), weights_only=True)
    assert_same_state(expected, load_state_dict(out))


@pytest.mark.slow
def test_tags_and_wrong_config(checkpoints, tmp_path):
    directory = os.path.join(checkpoints, "zero2")
    assert resolve_tag(directory, None) == "step1"
    with pytest.raises(CheckpointError, match="no checkpoint tagged 'step9'.*step1"):
        resolve_tag(directory, "step9")
    config_path = str(tmp_path / "config.json")
    save_model_config(tiny_llama_config(vocab_size=100, layers_num=3), config_path)
    with pytest.raises(TencentPretrainError):  # the script's run() harness makes it one line and status 2
        ds_script.main(["--input_model_path", directory, "--output_model_path", str(tmp_path / "x.bin"),
                        "--config_path", config_path])
    assert not os.path.exists(tmp_path / "x.bin")
