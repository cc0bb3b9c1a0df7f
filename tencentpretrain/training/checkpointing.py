"""Training checkpoints: where they go, how they are written safely, and how a run resumes from one.

Layout, for ``--output_model_path out.bin``::

    out.bin-<step>            TencentPretrain weights (LoRA tensors only with --use_lora), as the original wrote;
                              loadable with --pretrained_model_path (or --lora_pretrained_model_path)
    out.bin-<step>.sha256     its SHA-256 (sha256sum format), verified when the checkpoint is loaded
    out.bin-<step>.state/     resume state: trainer_state.json (counters, config, vocabulary), rank_<r>.pt
                              (RNG states and loader position of each rank), optimizer.pt (one process / DDP)
                              or deepspeed/ (the DeepSpeed engine checkpoint of every rank)
    out.bin                   the final weights, written at the end of the run (and out.bin.sha256)

The ``.pt`` files of the state hold only tensors, plain containers and numbers (the numpy RNG state is stored as a
tensor), so they are read with torch's restricted unpickler; DeepSpeed's files are checked with an allow-list of
the classes DeepSpeed writes before DeepSpeed reads them (see ``convert/deepspeed_checkpoint.py``).

Safety: the state is written into a temporary directory that is renamed into place, then the weights file is
written under a temporary name and renamed. The weights file is therefore the commit mark: a checkpoint whose
weights file exists is complete, and a crash at any point leaves the previous checkpoint untouched. What a killed
run leaves behind (``*.state.tmp``, ``*.partial`` and their temporaries, a state without its weights) is removed
by the next run on the same ``--output_model_path`` (``remove_interrupted_saves``).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import random
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tencentpretrain.atomic import atomic_path, remove_path, remove_stale_temporaries, write_json
from tencentpretrain.checkpoint import move_checkpoint_file, torch_load_restricted
from tencentpretrain.errors import CheckpointError
from tencentpretrain.training.parallel import DistEnv, barrier, broadcast_object

logger = logging.getLogger(__name__)

STATE_SUFFIX = ".state"
STATE_FILE = "trainer_state.json"
STATE_FORMAT = "tencentpretrain-train-state"
STATE_VERSION = 2  # 2: restricted-unpickler-safe .pt files (numpy RNG state as a tensor), weights checksums
AUTO = "auto"


@dataclass
class Counters:
    """Progress of a run; ``step`` counts optimizer steps, ``micro_step`` micro-batches."""

    step: int = 0
    micro_step: int = 0
    tokens: int = 0  # non-padding tokens seen by this rank


# ---------------------------------------------------------------------- paths
def checkpoint_path(output_model_path: str, step: int) -> str:
    return f"{output_model_path}-{step}"


def state_dir(weights_path: str) -> str:
    return weights_path + STATE_SUFFIX


def is_complete(weights_path: str) -> bool:
    return os.path.isfile(weights_path) and os.path.isfile(os.path.join(state_dir(weights_path), STATE_FILE))


def latest_checkpoint(output_model_path: str) -> str | None:
    """The complete checkpoint of ``output_model_path`` with the highest step, or None."""
    pattern = re.compile(re.escape(os.path.basename(output_model_path)) + r"-(\d+)$")
    best: tuple[int, str] | None = None
    for path in glob.glob(glob.escape(output_model_path) + "-*"):
        match = pattern.match(os.path.basename(path))
        if match and is_complete(path) and (best is None or int(match.group(1)) > best[0]):
            best = (int(match.group(1)), path)
    return best[1] if best else None


def resolve_resume(resume: str | None, output_model_path: str) -> str | None:
    """The weights path of the checkpoint to resume from (None: start fresh)."""
    if resume is None:
        return None
    if resume == AUTO:
        found = latest_checkpoint(output_model_path)
        logger.info("resume: %s", found or f"no complete checkpoint of {output_model_path} yet, starting fresh")
        return found
    path = resume[: -len(STATE_SUFFIX)] if resume.rstrip("/").endswith(STATE_SUFFIX) else resume
    path = path.rstrip("/")
    if not is_complete(path):
        raise CheckpointError(
            f"--resume_from_checkpoint {resume}: not a complete checkpoint (expected the weights file {path} and "
            f"{state_dir(path)}/{STATE_FILE}); --resume_from_checkpoint auto picks the latest complete one"
        )
    return path


# ---------------------------------------------------------------------- RNG and per-rank state
def rng_state() -> dict[str, Any]:
    """Every RNG of this process, as tensors, tuples and numbers only (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),  # (version, tuple of 625 ints, None)
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_file(directory: str, rank: int) -> str:
    return os.path.join(directory, f"rank_{rank}.pt")


# ---------------------------------------------------------------------- saving
def save_training_checkpoint(engine: Any, loader: Any, counters: Counters, fingerprint: dict[str, Any],
                             weights_path: str, *, lora_only: bool) -> None:
    """Write a complete checkpoint (all ranks call this together)."""
    env: DistEnv = engine.env
    final_dir = state_dir(weights_path)
    tmp_dir = f"{final_dir}.tmp"
    if env.is_main:
        for stale in (weights_path, tmp_dir, final_dir):  # an earlier, possibly half-written, save of this step
            _remove(stale)
        os.makedirs(tmp_dir)
    barrier(env)
    engine.save_state(tmp_dir)
    with atomic_path(rank_file(tmp_dir, env.rank)) as tmp:
        torch.save({"rng": rng_state(), "loader": loader.state_dict(), "tokens": counters.tokens}, tmp)
    barrier(env)
    if env.is_main:
        write_json(os.path.join(tmp_dir, STATE_FILE),
                   {"format": STATE_FORMAT, "version": STATE_VERSION, "step": counters.step,
                    "micro_step": counters.micro_step, "world_size": env.world_size, **fingerprint})
    engine.export_weights(tmp_dir, partial_path(weights_path), lora_only=lora_only)
    if env.is_main:
        os.replace(tmp_dir, final_dir)
        move_checkpoint_file(partial_path(weights_path), weights_path)  # the commit mark
        logger.info("saved checkpoint %s", weights_path)
    barrier(env)


def partial_path(weights_path: str) -> str:
    return weights_path + ".partial"


def _remove(path: str) -> None:
    remove_path(path)
    remove_path(path + ".sha256")


def remove_interrupted_saves(output_model_path: str) -> list[str]:
    """Remove what an interrupted save of ``output_model_path``'s checkpoints left behind (rank 0, before the
    run starts): ``*.state.tmp`` directories, ``*.partial`` weights, temporaries of dead processes, and state
    directories whose weights file (the commit mark) was never written. Returns what was removed."""
    base = glob.escape(output_model_path)
    removed = []
    for path in glob.glob(f"{base}-*{STATE_SUFFIX}.tmp") + glob.glob(f"{base}-*.partial"):
        _remove(path)
        removed.append(path)
    for path in glob.glob(f"{base}-*{STATE_SUFFIX}"):
        if not os.path.isfile(path[: -len(STATE_SUFFIX)]):
            _remove(path)
            removed.append(path)
    directory = os.path.dirname(os.path.abspath(output_model_path))
    if os.path.isdir(directory):
        removed += remove_stale_temporaries(directory, f".{os.path.basename(output_model_path)}")
    if removed:
        logger.info("removed %d leftovers of an interrupted save: %s", len(removed), ", ".join(sorted(removed)))
    return removed


# ---------------------------------------------------------------------- resuming
def read_trainer_state(weights_path: str) -> dict[str, Any]:
    path = os.path.join(state_dir(weights_path), STATE_FILE)
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a training state of this project")
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(
            f"{path}: training state version {state.get('version')}, this version reads {STATE_VERSION} (version 1 "
            "stored a pickled NumPy RNG state, which is no longer unpickled); the weights file "
            f"{weights_path} still loads with --pretrained_model_path, without the optimizer state"
        )
    return state


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], source: str) -> None:
    """Refuse a checkpoint whose model config, vocabulary, LoRA setup or engine differs from this run's."""
    problems = []
    for key, value in current.items():
        old = saved.get(key)
        if key == "model_config":
            problems += [f"model config {k}: checkpoint {old.get(k)!r}, this run {value.get(k)!r}"
                         for k in sorted(set(old) | set(value)) if old.get(k) != value.get(k)]
        elif key == "tokenizer_files" and not (old and value):
            continue  # unknown on one side: the vocabulary size is still compared
        elif old != value:
            problems.append(f"{key}: checkpoint {old!r}, this run {value!r}")
    if problems:
        raise CheckpointError(f"cannot resume from {source}, it does not match this run:\n  " + "\n  ".join(problems))


def load_training_checkpoint(engine: Any, loader: Any, fingerprint: dict[str, Any], weights_path: str) -> Counters:
    """Restore model, optimizer, schedule, loader position, RNG states and counters; returns the counters."""
    env: DistEnv = engine.env
    saved = broadcast_object(env, read_trainer_state(weights_path) if env.is_main else None)
    check_fingerprint(saved, fingerprint, weights_path)
    directory = state_dir(weights_path)
    engine.load_state(directory, weights_path)
    per_rank = rank_file(directory, env.rank)
    if not os.path.isfile(per_rank):
        raise CheckpointError(f"{weights_path} was saved by {saved['world_size']} processes, this run has "
                              f"{env.world_size}; no state for rank {env.rank}")
    state = torch_load_restricted(per_rank, mmap=False)
    loader.load_state_dict(state["loader"])
    if saved["world_size"] == env.world_size:
        set_rng_state(state["rng"])
    else:
        logger.warning("resuming with %d processes instead of %d: random states are not restored",
                       env.world_size, saved["world_size"])
    logger.info("resumed from %s at step %d", weights_path, saved["step"])
    return Counters(step=saved["step"], micro_step=saved["micro_step"], tokens=int(state.get("tokens", 0)))
