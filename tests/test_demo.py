"""The demo of ``bash demo.sh`` runs every stage end to end (on tiny step counts) and reuses what it built."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


@pytest.mark.slow
def test_demo_runs_every_stage_and_reuses_its_outputs(tmp_path):
    command = [sys.executable, "-m", "tencentpretrain.demo", "--output_dir", str(tmp_path), "--pretrain_steps", "4",
               "--sft_steps", "2", "--chat_steps", "2"]
    first = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    for name in ("tokenizer.model", "pretrained.bin", "pretrain_loss.png", "lora_chat.bin", "chat.bin",
                 "answers.txt", "hf/config.json", "chat-q8_0.gguf", "perplexity.json"):
        assert os.path.exists(tmp_path / name), name
    assert "浙江省的省会是哪里？" in (tmp_path / "answers.txt").read_text(encoding="utf-8")
    assert "held-out perplexity of the pretrained model" in first.stdout

    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("already built, reusing") == 13
