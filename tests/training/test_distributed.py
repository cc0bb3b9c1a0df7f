"""Multi-process training on CPU (gloo): DDP and DeepSpeed ZeRO-2/3 through torchrun, 2 processes each."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.hf import convert_tencentpretrain_to_hf
from tencentpretrain.convert.loading import load_model
from tencentpretrain.data.loader import BatchLoader
from tencentpretrain.models.model import build_model
from tencentpretrain.training.parallel import free_port
from tests.helpers import REPO_ROOT
from tests.training.conftest import TINY_CONFIG, train_args
from tests.training.test_resume import assert_same_weights, copy_checkpoint

pytestmark = pytest.mark.slow
VOCAB = 700
SRC = torch.arange(1, 17).remainder(600).view(2, 8) + 4  # the input of tests/training/dist_worker.py


def launch(out_dir: str, args: list[str], nproc: int = 2) -> list[dict]:
    """Run the worker under torchrun; return each rank's dump."""
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
           str(free_port()), "-m", "tests.training.dist_worker", out_dir, *args, "--world_size", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(nproc)]


def full_then_resumed(tiny_dataset: str, tmp_path, extra: tuple[str, ...]) -> tuple[list[dict], list[dict], str, str]:
    full_out, resumed_out = str(tmp_path / "full" / "out.bin"), str(tmp_path / "resumed" / "out.bin")
    full = launch(str(tmp_path / "w_full"), train_args(tiny_dataset, full_out, *extra, steps=8, save=4))
    copy_checkpoint(f"{full_out}-4", str(tmp_path / "resumed"))
    resumed = launch(str(tmp_path / "w_resumed"),
                     train_args(tiny_dataset, resumed_out, *extra, "--resume_from_checkpoint", "auto", steps=8, save=4))
    return full, resumed, full_out, resumed_out


def test_ddp_resume_is_exact(tiny_dataset, tmp_path):
    extra = ("--dropout", "0.1", "--accumulation_steps", "2", "--batch_size", "2")
    full, resumed, full_out, resumed_out = full_then_resumed(tiny_dataset, tmp_path, extra)
    for rank in range(2):
        assert resumed[rank]["losses"] == full[rank]["losses"][4:]
    assert full[0]["losses"] != full[1]["losses"]  # the ranks saw different data
    assert_same_weights(resumed_out, full_out)


def test_deepspeed_resume_matches_within_float_noise(tiny_dataset, tmp_path):
    extra = ("--batch_size", "2", "--accumulation_steps", "2", "--deepspeed", "--deepspeed_config",
             os.path.join(REPO_ROOT, "models", "deepspeed_cpu_config.json"))
    full, resumed, full_out, resumed_out = full_then_resumed(tiny_dataset, tmp_path, extra)
    for rank in range(2):
        torch.testing.assert_close(torch.tensor(resumed[rank]["losses"]), torch.tensor(full[rank]["losses"][4:]),
                                   rtol=1e-5, atol=1e-5)
    a, b = torch.load(full_out, weights_only=True), torch.load(resumed_out, weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


@pytest.fixture
def pretrained(tmp_path) -> str:
    torch.manual_seed(3)
    path = str(tmp_path / "pretrained.bin")
    save_checkpoint(build_model(load_model_config(TINY_CONFIG), VOCAB), path)
    return path


def first_batch_loss(dataset: str, model_path: str) -> float:
    """The loss of rank 0's first batch (2 ranks, batch 2) under the plain model at ``model_path``."""
    batch = next(BatchLoader(dataset, 2, seed=7, rank=0, world_size=2))
    model = load_model(TINY_CONFIG, model_path, vocab_size=VOCAB)
    with torch.no_grad():
        return model(batch.src, batch.tgt, batch.seg, batch.loss_mask).loss.item()


ZERO3 = ("--deepspeed", "--deepspeed_config", os.path.join(REPO_ROOT, "models", "deepspeed_zero3_cpu_config.json"),
         "--enable_zero3", "--batch_size", "2", "--data_processor", "lm")


@pytest.mark.parametrize("start_from", ["ours", "hf"])
def test_zero3_loads_partitioned_and_consolidates(tiny_dataset, tmp_path, pretrained, start_from):
    out = str(tmp_path / "z3" / "out.bin")
    start = pretrained
    if start_from == "hf":  # the same weights as an HF LLaMA directory, converted shard by shard on rank 0
        start = str(tmp_path / "hf")
        convert_tencentpretrain_to_hf(pretrained, start, replace(load_model_config(TINY_CONFIG), vocab_size=VOCAB))
    dumps = launch(str(tmp_path / "w"), train_args(tiny_dataset, out, *ZERO3, "--pretrained_model_path", start,
                                                  steps=4, save=2))
    # the partitioned load reproduced the pretrained weights: same first loss as the plain model
    assert dumps[0]["losses"][0] == pytest.approx(first_batch_loss(tiny_dataset, pretrained), abs=1e-5)
    model = load_model(TINY_CONFIG, out, vocab_size=VOCAB)  # strict
    with torch.no_grad():
        logits = model.logits(SRC)
    torch.testing.assert_close(logits, dumps[0]["logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dumps[1]["logits"], dumps[0]["logits"], rtol=0, atol=0)
    assert not torch.equal(torch.load(out, weights_only=True)["embedding.word.embedding.weight"],
                           torch.load(pretrained, weights_only=True)["embedding.word.embedding.weight"])


def test_zero3_lora_saves_only_lora_keys_that_reload(tiny_dataset, tmp_path, pretrained):
    """ZeRO-3 + LoRA + activation checkpointing (ChatLLaMA's LoRA recipe): the recomputed forward gathers the
    partitioned weights again, and the adapters that come out reproduce the engine's logits."""
    out = str(tmp_path / "z3lora" / "out.bin")
    lora = ("--use_lora", "--lora_r", "4", "--lora_target_modules", "linear_layers.0", "linear_layers.1",
            "linear_layers.2", "--learning_rate", "1e-2", "--deepspeed_checkpoint_activations")
    dumps = launch(str(tmp_path / "w"), train_args(tiny_dataset, out, *ZERO3, *lora, "--pretrained_model_path",
                                                  pretrained, steps=4, save=4))
    state = torch.load(out, weights_only=True)
    assert state and all("lora_" in k for k in state) and len(state) == 2 * 3 * 2  # 2 layers x Q,K,V x A,B
    assert state["encoder.transformer.0.self_attn.linear_layers.1.lora_B"].shape == (32, 4)  # GQA: K is narrower
    assert all(state[k].abs().sum() > 0 for k in state if k.endswith("lora_B"))  # B starts at 0: gradients came
    model = load_model(TINY_CONFIG, pretrained, vocab_size=VOCAB, lora_path=out)
    with torch.no_grad():
        logits = model.logits(SRC)
    torch.testing.assert_close(logits, dumps[0]["logits"], rtol=1e-5, atol=1e-5)
    shutil.rmtree(tmp_path / "w")


def test_zero3_offload_bf16_trains_with_deepspeed_cpu_adam(tiny_dataset, tmp_path, pretrained):
    """The shipped offload config (parameters and optimizer states on the CPU, bf16): DeepSpeedCPUAdam, built by
    DeepSpeed's JIT on first use, takes the steps; the consolidated weights reload and moved from the start."""
    out = str(tmp_path / "offload" / "out.bin")
    args = train_args(tiny_dataset, out, "--deepspeed", "--deepspeed_config",
                      os.path.join(REPO_ROOT, "models", "deepspeed_zero3_bf16_config.json"), "--enable_zero3",
                      "--batch_size", "2", "--pretrained_model_path", pretrained, "--learning_rate", "1e-2",
                      steps=4, save=4)
    dumps = launch(str(tmp_path / "w"), args)
    assert all(math.isfinite(loss) for loss in dumps[0]["losses"]) and len(dumps[0]["losses"]) == 4
    trained, start = torch.load(out, weights_only=True), torch.load(pretrained, weights_only=True)
    assert trained.keys() == start.keys()
    assert not torch.equal(trained["encoder.transformer.0.self_attn.linear_layers.0.weight"].float(),
                           start["encoder.transformer.0.self_attn.linear_layers.0.weight"])
    model = load_model(TINY_CONFIG, out, vocab_size=VOCAB)  # strict
    with torch.no_grad():
        logits = model.logits(SRC)
    torch.testing.assert_close(logits, dumps[0]["logits"], rtol=2e-2, atol=2e-2)  # bf16 engine vs fp32 reload


def test_deepspeed_leaves_no_shared_memory_buffers(tmp_path):
    """DeepSpeed's CPU all-reduce creates a 67 MB /dev/shm file per rank and never removes it; init_distributed
    removes the names once every rank has mapped them, and the group still works."""
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "tests.training.shm_worker", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for rank in range(2):
        dump = json.loads((tmp_path / f"rank{rank}.json").read_text(encoding="utf-8"))
        assert dump["left"] == []
        assert dump["summed"] == [3.0] * 8
    assert not [name for name in os.listdir("/dev/shm") if name.endswith(f"_{port}_0") or name.endswith(f"_{port}_1")]
