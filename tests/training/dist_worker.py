"""Run ``pretrain.py``'s main in a launched process and dump what the test compares (losses, engine logits).

Usage: torchrun --nproc_per_node N -m tests.training.dist_worker OUT_DIR [pretrain.py flags]
Writes OUT_DIR/rank<r>.pt with this rank's per-step losses and, under DeepSpeed, the logits of a fixed input
computed by the engine's model after training.
"""

from __future__ import annotations

import os
import sys

import torch

from tencentpretrain.training.cli import main
from tencentpretrain.training.parallel import shutdown_distributed


def engine_logits(result) -> torch.Tensor:
    model = result.engine.module
    model.eval()
    src = torch.arange(1, 17).remainder(600).view(2, 8) + 4  # (2, 8) fixed token ids
    with torch.no_grad():
        return model.logits(src).float()


def run() -> None:
    out_dir, argv = sys.argv[1], sys.argv[2:]
    result = main(argv)
    rank = int(os.environ.get("RANK", "0"))
    dump = {"losses": result.losses, "step": result.counters.step}
    if "--deepspeed" in argv:
        dump["logits"] = engine_logits(result)
    torch.save(dump, os.path.join(out_dir, f"rank{rank}.pt"))
    shutdown_distributed()


if __name__ == "__main__":
    run()
