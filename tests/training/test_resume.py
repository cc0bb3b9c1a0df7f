"""Exact resume on the plain path, refusal of a mismatched checkpoint, and a SIGKILL during a checkpoint write."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from tencentpretrain.errors import CheckpointError
from tencentpretrain.training import checkpointing as ckpt
from tencentpretrain.training.cli import main
from tests.helpers import REPO_ROOT
from tests.training.conftest import train_args

# dropout exercises the RNG states; accumulation and cosine exercise the step counters and the schedule
EXTRA = ("--dropout", "0.1", "--accumulation_steps", "2", "--scheduler", "cosine", "--warmup", "0.2")
STEPS, SAVE = 12, 4


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("full") / "out.bin")
    result = main(train_args(tiny_dataset, out, *EXTRA, steps=STEPS, save=SAVE))
    return out, result


def copy_checkpoint(weights: str, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    shutil.copy(weights, directory)
    shutil.copytree(ckpt.state_dir(weights), os.path.join(directory, os.path.basename(ckpt.state_dir(weights))))


def assert_same_weights(a: str, b: str) -> None:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_checkpoints_and_final_model_are_written(uninterrupted):
    out, result = uninterrupted
    assert [ckpt.is_complete(f"{out}-{s}") for s in (4, 8, 12)] == [True, True, True]
    assert os.path.isfile(out) and len(result.losses) == STEPS
    assert result.counters.step == STEPS and result.counters.micro_step == 2 * STEPS
    assert_same_weights(out, f"{out}-{STEPS}")


def test_resume_gives_identical_losses_and_weights(uninterrupted, tiny_dataset, tmp_path):
    out, full = uninterrupted
    resumed_out = str(tmp_path / "out.bin")
    copy_checkpoint(f"{out}-{SAVE}", str(tmp_path))
    resumed = main(train_args(tiny_dataset, resumed_out, *EXTRA, "--resume_from_checkpoint", "auto",
                              steps=STEPS, save=SAVE))
    assert resumed.losses == full.losses[SAVE:]  # bit-identical, not approximately
    assert resumed.counters.step == STEPS and resumed.counters.micro_step == 2 * STEPS
    assert resumed.counters.tokens == full.counters.tokens
    assert_same_weights(resumed_out, out)


def test_resume_refuses_a_different_model_config(uninterrupted, tiny_dataset, tmp_path):
    out, _ = uninterrupted
    with pytest.raises(CheckpointError, match="feedforward_size: checkpoint 176, this run 192"):
        main(train_args(tiny_dataset, str(tmp_path / "x.bin"), *EXTRA, "--feedforward_size", "192",
                        "--resume_from_checkpoint", f"{out}-{SAVE}", steps=STEPS, save=SAVE))


def test_resume_refuses_an_incomplete_checkpoint(uninterrupted, tiny_dataset, tmp_path):
    out, _ = uninterrupted
    copy_checkpoint(f"{out}-{SAVE}", str(tmp_path))
    os.remove(tmp_path / f"out.bin-{SAVE}")  # the weights file is the commit mark
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        main(train_args(tiny_dataset, str(tmp_path / "out.bin"), "--resume_from_checkpoint",
                        str(tmp_path / f"out.bin-{SAVE}")))
    assert ckpt.latest_checkpoint(str(tmp_path / "out.bin")) is None


KILLER = textwrap.dedent("""
    import os, signal, sys, torch
    from tencentpretrain.training.cli import main
    real_save = torch.save
    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if isinstance(f, str) and os.path.basename(f).startswith(".out.bin-8.partial"):
            os.truncate(f, os.path.getsize(f) // 2)  # half of the weights are on disk ...
            os.kill(os.getpid(), signal.SIGKILL)  # ... when the process dies
    torch.save = dying_save
    main(sys.argv[1:])
""")


@pytest.mark.slow
def test_sigkill_during_checkpoint_write_resumes_from_previous(uninterrupted, tiny_dataset, tmp_path):
    out, full = uninterrupted
    killed_out = str(tmp_path / "out.bin")
    args = train_args(tiny_dataset, killed_out, *EXTRA, steps=STEPS, save=SAVE)
    proc = subprocess.run([sys.executable, "-c", KILLER, *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not os.path.exists(f"{killed_out}-8") and ckpt.is_complete(f"{killed_out}-4")
    assert ckpt.latest_checkpoint(killed_out) == f"{killed_out}-4"
    leftovers = lambda: sorted(f for f in os.listdir(tmp_path) if ".tmp" in f or ".partial" in f)  # noqa: E731
    assert "out.bin-8.state.tmp" in leftovers() and any(f.startswith(".out.bin-8.partial.") for f in leftovers())
    resumed = main([*args, "--resume_from_checkpoint", "auto"])
    assert resumed.losses == full.losses[4:]
    assert_same_weights(killed_out, out)
    assert leftovers() == []  # the resumed run cleaned up after the killed one
