"""Files a user is handed cannot run code, diverging runs stop without saving, interrupted saves are cleaned up.

The malicious files here would create a marker file if they were ever unpickled freely; every loader of the
project must refuse them with a clear error and leave no marker.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import pytest
import torch

from tencentpretrain.checkpoint import (
    load_checkpoint,
    load_file,
    load_state_dict,
    save_file,
    torch_load_restricted,
)
from tencentpretrain.errors import CheckpointError, DataError
from tencentpretrain.training import checkpointing as ckpt
from tencentpretrain.training.cli import main
from tencentpretrain.training.trainer import NonFiniteError
from tests.helpers import tiny_llama_config
from tests.training.conftest import train_args

REFUSED = "refused to load: it holds Python objects other than tensors"


class RunsShell:
    """Unpickling this runs ``touch marker`` through os.system."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class RunsPython:
    """Unpickling this runs Python code through builtins.exec."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.fixture(params=["torch-zip/os.system", "raw-pickle/exec"])
def evil(request, tmp_path):
    """(write(path, payload_around=...), marker): writes a malicious file in one of two encodings."""
    marker = str(tmp_path / "PWNED")

    def write(path: str, around: dict | None = None) -> str:
        payload = dict(around or {"weight": torch.ones(3)})
        if request.param.startswith("torch-zip"):
            payload["evil"] = RunsShell(marker)
            torch.save(payload, path)
        else:
            payload["evil"] = RunsPython(marker)
            with open(path, "wb") as f:
                pickle.dump(payload, f, protocol=2)  # torch's own protocol: the unpickler gets to the global
        return path

    yield write, marker
    assert not os.path.exists(marker), "a malicious pickle ran code"


def test_the_payloads_are_real(tmp_path):
    """The files would run code under a free unpickler (so the tests below cannot pass vacuously)."""
    marker = str(tmp_path / "PWNED")
    path = str(tmp_path / "x.pt")
    torch.save({"evil": RunsShell(marker)}, path)
    torch.load(path, weights_only=False)
    assert os.path.exists(marker)
    os.remove(marker)
    with open(path, "wb") as f:
        pickle.dump({"evil": RunsPython(marker)}, f)
    with open(path, "rb") as f:
        pickle.load(f)
    assert os.path.exists(marker)


def test_weight_files_and_listing_refuse_it(evil, tmp_path):
    write, _ = evil
    from tencentpretrain.convert.stream import iter_tensors, list_keys

    path = write(str(tmp_path / "model.bin"))
    for load in (load_file, load_state_dict, torch_load_restricted, list_keys, lambda p: list(iter_tensors(p))):
        with pytest.raises(CheckpointError, match=f"model.bin: {REFUSED}"):
            load(path)


def test_pretrained_and_lora_loading_refuse_it(evil, tmp_path):
    write, _ = evil
    from tencentpretrain.models.model import build_model
    from tencentpretrain.training.model_setup import load_lora_weights
    from tencentpretrain.transforms.lora import LoraConfig, apply_lora

    model = build_model(tiny_llama_config(), 100)
    with pytest.raises(CheckpointError, match=REFUSED):
        load_checkpoint(model, write(str(tmp_path / "pretrained.bin"), model.state_dict()))
    apply_lora(model, LoraConfig())
    with pytest.raises(CheckpointError, match=REFUSED):
        load_lora_weights(model, write(str(tmp_path / "lora.bin")))


def test_original_dataset_importer_refuses_it(evil, tmp_path):
    write, _ = evil
    from tencentpretrain.data.config import DataConfig
    from tencentpretrain.data.import_original import import_original_dataset
    from tencentpretrain.tokenizers import TokenizerConfig
    from tests.training.conftest import SPM

    path = write(str(tmp_path / "dataset.pt"), {"src": [1, 2, 3]})
    config = DataConfig(corpus_path=path, dataset_path=str(tmp_path / "new"), data_processor="lm")
    with pytest.raises(DataError):
        import_original_dataset(path, config, TokenizerConfig(spm_model_path=SPM))


def _fake_deepspeed_dir(root: str, write) -> str:
    """DeepSpeed's layout (latest, <tag>/mp_rank_00_model_states.pt) with a malicious model-states file."""
    os.makedirs(os.path.join(root, "step1"))
    with open(os.path.join(root, "latest"), "w") as f:
        f.write("step1")
    write(os.path.join(root, "step1", "mp_rank_00_model_states.pt"),
          {"module": {"w": torch.ones(2)}, "buffer_names": [], "param_shapes": [{"w": torch.Size([2])}]})
    return root


def test_deepspeed_converter_refuses_it(evil, tmp_path):
    pytest.importorskip("deepspeed")
    write, _ = evil
    from scripts import convert_deepspeed_to_tencentpretrain as ds_script
    from tencentpretrain.convert.deepspeed_checkpoint import convert_deepspeed_to_tencentpretrain

    directory = _fake_deepspeed_dir(str(tmp_path / "ds"), write)
    with pytest.raises(CheckpointError, match=f"mp_rank_00_model_states.pt: {REFUSED}"):
        convert_deepspeed_to_tencentpretrain(directory, str(tmp_path / "out.bin"))
    with pytest.raises(CheckpointError, match=REFUSED):  # the script's run(main) makes it one line, exit 2
        ds_script.main(["--input_model_path", directory, "--output_model_path", str(tmp_path / "out.bin")])
    assert not os.path.exists(tmp_path / "out.bin")


def test_deepspeeds_own_loading_is_restricted_too(evil, tmp_path):
    """Even without the file check, DeepSpeed's torch.load(weights_only=False) is restricted inside the guard."""
    pytest.importorskip("deepspeed")
    write, _ = evil
    from deepspeed.utils import zero_to_fp32

    from tencentpretrain.convert.deepspeed_checkpoint import restricted_deepspeed_loading

    directory = _fake_deepspeed_dir(str(tmp_path / "ds"), write)
    with pytest.raises(CheckpointError, match="DeepSpeed checkpoint file was refused"):
        with restricted_deepspeed_loading():
            zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(directory, tag="step1")
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # the switch is only on inside the block


# ---------------------------------------------------------------------- resume state
@pytest.fixture(scope="module")
def short_run(tiny_dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("short") / "out.bin")
    main(train_args(tiny_dataset, out, steps=2, save=2))
    return out


def _resume_copy(short_run: str, directory) -> str:
    from tests.training.test_resume import copy_checkpoint

    copy_checkpoint(f"{short_run}-2", str(directory))
    shutil.copy(f"{short_run}-2.sha256", str(directory))
    return str(directory / "out.bin")


def test_a_version_1_state_is_refused_with_a_way_out(short_run, tiny_dataset, tmp_path):
    out = _resume_copy(short_run, tmp_path)
    state_file = os.path.join(ckpt.state_dir(f"{out}-2"), ckpt.STATE_FILE)
    with open(state_file) as f:
        state = json.load(f)
    with open(state_file, "w") as f:
        json.dump({**state, "version": 1}, f)
    with pytest.raises(CheckpointError, match=r"state version 1, this version reads 2.*--pretrained_model_path"):
        main(train_args(tiny_dataset, out, "--resume_from_checkpoint", "auto", steps=4, save=2))


def test_resume_state_holds_only_plain_data(short_run):
    state_dir = ckpt.state_dir(f"{short_run}-2")
    for name in ("rank_0.pt", "optimizer.pt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(os.path.join(state_dir, name)) == []


@pytest.mark.parametrize("name", ["rank_0.pt", "optimizer.pt"])
def test_resume_refuses_a_malicious_state_file(evil, short_run, tiny_dataset, tmp_path, name):
    write, _ = evil
    out = _resume_copy(short_run, tmp_path)
    write(os.path.join(ckpt.state_dir(f"{out}-2"), name))
    with pytest.raises(CheckpointError, match=f"{name}: {REFUSED}"):
        main(train_args(tiny_dataset, out, "--resume_from_checkpoint", "auto", steps=4, save=2))


def test_every_optimizer_state_loads_restricted(tmp_path):
    from tencentpretrain.registry import OPTIMIZERS
    from tencentpretrain.training.config import OptimConfig
    from tencentpretrain.training.optim import build_optimizer, build_scheduler

    for name in OPTIMIZERS.names():
        model = torch.nn.Linear(4, 3)
        optimizer = build_optimizer(model, OptimConfig(optimizer=name, learning_rate=1e-3))
        scheduler = build_scheduler(optimizer, OptimConfig(optimizer=name, learning_rate=1e-3), 10)
        model(torch.ones(2, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
        path = str(tmp_path / f"{name}.pt")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path)
        loaded = torch_load_restricted(path, mmap=False)
        assert loaded["scheduler"]["last_epoch"] == 1, name
        assert len(loaded["optimizer"]["state"]) == len(optimizer.state_dict()["state"]), name


def test_rng_state_round_trips_through_the_restricted_loader(tmp_path):
    import random

    import numpy as np

    path = str(tmp_path / "rng.pt")
    torch.save(ckpt.rng_state(), path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(torch_load_restricted(path, mmap=False))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


# ---------------------------------------------------------------------- checksums on resume
def test_resume_refuses_corrupted_weights(short_run, tiny_dataset, tmp_path):
    out = _resume_copy(short_run, tmp_path)
    weights = f"{out}-2"
    size = os.path.getsize(weights)
    with open(weights, "r+b") as f:  # 16 KiB overwritten in the middle, as a bad disk would
        f.seek(size // 2)
        f.write(bytes(16 * 1024))
    with pytest.raises(CheckpointError, match=f"{weights}: checksum mismatch"):
        main(train_args(tiny_dataset, out, "--resume_from_checkpoint", "auto", steps=4, save=2))


def test_final_model_has_a_checksum(short_run):
    from tencentpretrain.checkpoint import read_checksum_file, sha256_file

    assert read_checksum_file(short_run) == sha256_file(short_run) == read_checksum_file(f"{short_run}-2")
    with open(f"{short_run}.sha256") as f:
        assert f.read() == f"{sha256_file(short_run)}  out.bin\n"  # sha256sum -c reads it


# ---------------------------------------------------------------------- non-finite steps
DIVERGE = ("--learning_rate", "1e4", "--warmup", "0", "--report_steps", "4")


def _finite(path: str) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_state_dict(path).values())


def _saved_steps(out: str) -> list[int]:
    directory, name = os.path.split(out)
    return sorted(int(f.rsplit("-", 1)[1]) for f in os.listdir(directory)
                  if f.startswith(name + "-") and f.rsplit("-", 1)[1].isdigit())


def test_diverging_run_stops_without_saving_non_finite_weights(tiny_dataset, tmp_path):
    out = str(tmp_path / "out.bin")
    with pytest.raises(NonFiniteError) as info:
        main(train_args(tiny_dataset, out, *DIVERGE, steps=8, save=2))
    message = str(info.value)
    bad_step = int(re.match(r"step (\d+): loss \S+, gradient norm \S+ \(NaN or infinite\)", message).group(1))
    assert "--skip_nonfinite_steps" in message and "--learning_rate" in message
    saved = _saved_steps(out)
    assert saved and max(saved) < bad_step  # nothing saved from the first bad step on
    assert f"The last good checkpoint is {out}-{max(saved)}" in message
    assert all(_finite(f"{out}-{s}") for s in saved)
    assert not os.path.exists(out)


def test_skipping_non_finite_steps_continues_then_stops(tiny_dataset, tmp_path, caplog):
    out = str(tmp_path / "out.bin")
    with pytest.raises(NonFiniteError, match=r"after skipping 1 such steps \(--skip_nonfinite_steps\)") as info:
        main(train_args(tiny_dataset, out, *DIVERGE, "--skip_nonfinite_steps", "1", steps=8, save=2))
    skipped = [int(r.getMessage().split(":")[0].split()[1]) for r in caplog.records
               if "skipped, no update" in r.getMessage()]
    stopped = int(re.match(r"step (\d+)", str(info.value)).group(1))
    assert len(skipped) == 1 and skipped[0] < stopped
    saved = _saved_steps(out)
    assert max(saved) > skipped[0]  # training went on after the skipped step
    assert all(_finite(f"{out}-{s}") for s in saved)


def test_a_skipped_step_changes_no_weight_and_no_optimizer_state():
    from tencentpretrain.training.config import OptimConfig
    from tencentpretrain.training.engine import LocalEngine
    from tencentpretrain.training.optim import build_optimizer, build_scheduler
    from tencentpretrain.training.parallel import DistEnv

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    config = OptimConfig(learning_rate=1e-2, warmup=0.0)
    optimizer = build_optimizer(model, config)
    one_cpu_process = DistEnv(0, 0, 1, torch.device("cpu"), None)
    engine = LocalEngine(model, optimizer, build_scheduler(optimizer, config, 10), env=one_cpu_process,
                         precision="fp32", max_grad_norm=1.0, accumulation_steps=1)
    model(torch.ones(2, 4)).sum().backward()
    engine.step()
    weights, state = [p.detach().clone() for p in model.parameters()], optimizer.state_dict()
    (model(torch.ones(2, 4)).sum() * float("nan")).backward()
    norm = engine.clip()
    assert torch.isnan(norm)
    engine.apply(skip=True)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    after = optimizer.state_dict()
    assert all(torch.equal(state["state"][i]["exp_avg"], after["state"][i]["exp_avg"]) for i in state["state"])
    assert engine.scheduler.last_epoch == 2 and all(p.grad is None for p in model.parameters())


def test_skip_is_refused_under_deepspeed(tiny_dataset, tmp_path):
    pytest.importorskip("deepspeed")
    from tencentpretrain.errors import ConfigError
    from tests.helpers import REPO_ROOT

    with pytest.raises(ConfigError, match="--skip_nonfinite_steps is not supported under DeepSpeed"):
        main(train_args(tiny_dataset, str(tmp_path / "o.bin"), "--skip_nonfinite_steps", "1", "--deepspeed",
                        "--deepspeed_config", os.path.join(REPO_ROOT, "models", "deepspeed_cpu_config.json")))


# ---------------------------------------------------------------------- leftovers of a killed run
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_run_removes_what_an_interrupted_save_left(short_run, tiny_dataset, tmp_path):
    out = _resume_copy(short_run, tmp_path)
    pid = dead_pid()
    leftovers = [f"{out}-4.state.tmp", f"{out}-4.partial", str(tmp_path / f".out.bin-4.partial.x1y2.tmp-{pid}"),
                 str(tmp_path / f".out.bin.a9b8.tmp-{pid}"), f"{out}-6.state"]
    os.makedirs(leftovers[0])
    os.makedirs(leftovers[4])  # a state whose weights file (the commit mark) was never written
    for path in leftovers[1:4]:
        with open(path, "wb") as f:
            f.write(b"half")
    live = str(tmp_path / f".out.bin.c7d6.tmp-{os.getpid()}")  # a live process's temporary is left alone
    open(live, "wb").close()
    main(train_args(tiny_dataset, out, "--resume_from_checkpoint", "auto", steps=4, save=2))
    assert [p for p in leftovers if os.path.exists(p)] == []
    assert os.path.exists(live)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(live), "out.bin", "out.bin.sha256"]
        + [f"out.bin-{s}{suffix}" for s in (2, 4) for suffix in ("", ".sha256", ".state")])


def test_saving_removes_dead_temporaries_of_the_same_file(tmp_path):
    path = str(tmp_path / "model.bin")
    stale = str(tmp_path / f".model.bin.k3j4.tmp-{dead_pid()}")
    other = str(tmp_path / f".other.bin.k3j4.tmp-{dead_pid()}")
    for p in (stale, other):
        open(p, "wb").close()
    save_file({"w": torch.ones(2)}, path)
    assert not os.path.exists(stale) and os.path.exists(other)


@pytest.mark.slow
def test_deepspeed_resume_refuses_a_malicious_engine_file(tiny_dataset, tmp_path):
    """DeepSpeed's engine.load_checkpoint would unpickle anything: every file is checked before it runs."""
    pytest.importorskip("deepspeed")
    from tencentpretrain.training.parallel import free_port
    from tests.helpers import REPO_ROOT
    from tests.training.test_distributed import launch

    out = str(tmp_path / "out.bin")
    extra = ("--batch_size", "2", "--deepspeed", "--deepspeed_config",
             os.path.join(REPO_ROOT, "models", "deepspeed_cpu_config.json"))
    launch(str(tmp_path / "w"), train_args(tiny_dataset, out, *extra, steps=2, save=2))
    engine_dir = os.path.join(ckpt.state_dir(f"{out}-2"), "deepspeed", "engine")
    target = sorted(f for f in os.listdir(engine_dir) if f.endswith("optim_states.pt"))[-1]
    marker = str(tmp_path / "PWNED")
    torch.save({"optimizer_state_dict": RunsShell(marker)}, os.path.join(engine_dir, target))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "tests.training.dist_worker", str(tmp_path / "w2"),
           *train_args(tiny_dataset, out, *extra, "--resume_from_checkpoint", "auto", steps=4, save=2),
           "--world_size", "2"]
    os.makedirs(tmp_path / "w2")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert f"{target}: {REFUSED}" in proc.stderr, proc.stderr[-6000:]
    assert not os.path.exists(marker)


def test_training_defaults_to_bf16_on_a_gpu_that_has_it(monkeypatch, caplog):
    """No --precision: fp32 on the CPU; bf16 mixed precision on a CUDA device with bfloat16, fp32 with a warning on
    one without; a given --precision always wins. (The CUDA query is patched: there is no GPU here.)"""
    from tencentpretrain.training.parallel import DistEnv
    from tencentpretrain.training.trainer import default_precision

    cpu = DistEnv(0, 0, 1, torch.device("cpu"), None)
    gpu = DistEnv(0, 0, 1, torch.device("cuda", 0), None)
    assert default_precision(None, cpu) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert default_precision(None, gpu) == "bf16"
    assert default_precision("fp32", gpu) == "fp32" and default_precision("fp16", cpu) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    caplog.set_level("WARNING")
    assert default_precision(None, gpu) == "fp32"
    assert "no bfloat16" in caplog.text
