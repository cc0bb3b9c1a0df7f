"""Process glue: which rank this is, the process group, DDP wrapping, activation checkpointing.

The mode comes from the environment, never from editing files:

- no launcher: one process (CPU or one GPU);
- ``torchrun`` or the ``deepspeed`` launcher: they set RANK / LOCAL_RANK / WORLD_SIZE (and MASTER_ADDR/PORT);
- ``--gpu_ranks`` without a launcher: ``spawn_workers`` starts one process per listed rank, as the original did.

``--world_size`` is checked against the launcher before any collective call, so a mismatch is an error, not a
hang. The backend is nccl on GPU and gloo on CPU unless ``--backend`` says otherwise.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from tencentpretrain.errors import ConfigError
from tencentpretrain.training.config import DistOptions

logger = logging.getLogger(__name__)

LAUNCHER_VARS = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its ranks, the world size, its device and the process-group backend."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None  # None: no process group (one process, no DeepSpeed)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def launched_by_launcher() -> bool:
    """True when torchrun, the deepspeed launcher or ``spawn_workers`` set the rank variables."""
    return all(v in os.environ for v in LAUNCHER_VARS)


def check_world_size(opts: DistOptions) -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the launcher, after checking ``--world_size`` against it."""
    if launched_by_launcher():
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", opts.local_rank or 0))
    else:
        rank, local_rank, world = 0, 0, 1
    if opts.world_size != world:
        how = (f"the launcher started {world} processes" if launched_by_launcher()
               else "this is a single process started without a launcher")
        raise ConfigError(
            f"--world_size {opts.world_size} but {how}; pass --world_size {world}, or start {opts.world_size} "
            f"processes with `torchrun --nproc_per_node {opts.world_size} pretrain.py ...` or "
            f"`deepspeed --num_gpus {opts.world_size} pretrain.py --deepspeed ...`"
        )
    return rank, local_rank, world


def init_distributed(opts: DistOptions, *, use_deepspeed: bool) -> DistEnv:
    """Check the world size, pick the device and backend, and create the process group when one is needed."""
    rank, local_rank, world = check_world_size(opts)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world == 1 and not use_deepspeed:
        return DistEnv(rank, local_rank, world, device, None)
    backend = opts.backend or ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise ConfigError("--backend nccl needs GPUs; on CPU use --backend gloo (the default there)")
    _default_rendezvous()
    if not dist.is_initialized():
        if use_deepspeed:
            import deepspeed

            deepspeed.init_distributed(dist_backend=backend, verbose=False)
            if not cuda:
                _unlink_deepspeed_shm_buffer(rank)
        else:
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistEnv(rank, local_rank, world, device, backend)


def deepspeed_shm_buffer(rank: int) -> str:
    """The shared-memory file DeepSpeed's CPU all-reduce creates for ``rank`` (its naming, from the environment)."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}"


def _unlink_deepspeed_shm_buffer(rank: int) -> None:
    """DeepSpeed's CPU all-reduce maps a shared-memory buffer of about 67 MB per rank and never removes it, so
    every run left /dev/shm (RAM) fuller: 15 GB after a day of test runs here. Once every rank has mapped every
    buffer (DeepSpeed does so in its init; the barrier waits for all ranks), the names can go: the mappings live
    on until the processes exit, and the memory is freed then."""
    dist.barrier()
    try:
        os.unlink(deepspeed_shm_buffer(rank))
    except FileNotFoundError:  # a DeepSpeed without the shm all-reduce, or ranks on several hosts
        pass


def shutdown_distributed() -> None:
    """Wait for every rank, then tear down the process group (if any).

    Exiting with a live gloo group can abort a rank at interpreter teardown ("terminate called without an
    active exception"), which turns a finished run into a failed exit status.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _default_rendezvous() -> None:
    """A single process (DeepSpeed without a launcher) still needs rendezvous variables."""
    if launched_by_launcher():
        return
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"})
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_workers(opts: DistOptions, worker: Callable[[Sequence[str]], Any], argv: Sequence[str]) -> None:
    """The original's ``--gpu_ranks`` mode: one process per listed global rank, rendezvous at ``--master_ip``."""
    import torch.multiprocessing as mp

    if len(opts.gpu_ranks) > opts.world_size:
        raise ConfigError(f"--gpu_ranks lists {len(opts.gpu_ranks)} ranks, more than --world_size {opts.world_size}")
    host, _, port = opts.master_ip.removeprefix("tcp://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--master_ip {opts.master_ip!r}: expected tcp://HOST:PORT")
    mp.spawn(_spawned, args=(worker, list(argv), list(opts.gpu_ranks), opts.world_size, host, port),
             nprocs=len(opts.gpu_ranks), join=True)


def _spawned(index: int, worker: Callable, argv: list[str], ranks: list[int], world: int, host: str,
             port: str) -> None:
    os.environ.update({"RANK": str(ranks[index]), "LOCAL_RANK": str(index), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": host, "MASTER_PORT": port})
    worker(argv)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_object(env: DistEnv, value: Any) -> Any:
    """``value`` of rank 0 on every rank."""
    if not env.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(env: DistEnv, tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks (a new tensor; the input is left as it is)."""
    if not env.distributed:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out


def wrap_ddp(model: nn.Module, env: DistEnv) -> nn.Module:
    """DistributedDataParallel over ``model`` when there are several processes; the model itself otherwise."""
    if env.world_size == 1:
        return model
    device_ids = [env.local_rank] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP or DeepSpeed wrapper."""
    return getattr(model, "module", model)
