"""Train a tiny LLaMA for one step under DeepSpeed ZeRO-1, 2 and 3 on the CPU and save a checkpoint per stage.

Run by test_deepspeed.py in a subprocess: ``python ds_tiny_run.py OUT_DIR RANK WORLD_SIZE PORT``. Each stage
writes OUT_DIR/zero{stage}/ (DeepSpeed's layout) and, from rank 0, OUT_DIR/zero{stage}/expected.pt: the full
fp32 weights gathered from the engine, which the converted file must equal.
"""

from __future__ import annotations

import os
import sys

import torch


def main(out: str, rank: int, world_size: int, port: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    from tencentpretrain.models.model import build_model
    from tencentpretrain.training.parallel import shutdown_distributed
    from tests.helpers import tiny_llama_config

    for stage in (1, 2, 3):
        torch.manual_seed(0)
        model = build_model(tiny_llama_config(vocab_size=100))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
                  "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True}
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        src = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(rank))
        engine.backward(engine(src, src, torch.ones_like(src)).loss)
        engine.step()
        directory = os.path.join(out, f"zero{stage}")
        engine.save_checkpoint(directory, tag="step1")
        expected = {n: safe_get_full_fp32_param(p).detach().clone() for n, p in engine.module.named_parameters()}
        if rank == 0:
            torch.save(expected, os.path.join(directory, "expected.pt"))
    shutdown_distributed()  # a live gloo group can abort a rank at exit


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
