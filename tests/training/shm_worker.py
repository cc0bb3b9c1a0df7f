"""A DeepSpeed process group on the CPU: after ``init_distributed``, no rank's shared-memory all-reduce buffer is
left in /dev/shm, and the group still sums across ranks. (DeepSpeed's own shm all-reduce, ``inference_all_reduce``,
faults on this machine's CPU with or without the names; training does not use it.)

Usage: torchrun --nproc_per_node 2 -m tests.training.shm_worker OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys

import torch

from tencentpretrain.training.config import DistOptions
from tencentpretrain.training.parallel import deepspeed_shm_buffer, init_distributed, shutdown_distributed


def run() -> None:
    import deepspeed.comm

    out_dir = sys.argv[1]
    env = init_distributed(DistOptions(world_size=int(os.environ["WORLD_SIZE"])), use_deepspeed=True)
    left = [r for r in range(env.world_size) if os.path.exists(deepspeed_shm_buffer(r))]
    summed = torch.full((8,), float(env.rank + 1))
    deepspeed.comm.all_reduce(summed)
    with open(os.path.join(out_dir, f"rank{env.rank}.json"), "w", encoding="utf-8") as f:
        json.dump({"left": left, "summed": summed.tolist()}, f)
    shutdown_distributed()


if __name__ == "__main__":
    run()
