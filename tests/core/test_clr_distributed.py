"""The clr target under torch.distributed (2 gloo processes, half the batch each): every rank contrasts against
the whole batch, so its loss is the single-process loss of the full batch. Gradients reach a rank's own
features only (the gathered copies carry none, as in the original and SimCSE): after DDP's averaging the
projections get the full batch's gradient divided by the world size, the temperature the full one."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tencentpretrain.config import ModelConfig
from tencentpretrain.registry import TARGETS

WORLD = 2


def clr_target() -> torch.nn.Module:
    stream = {"embedding": ["word"], "encoder": "lstm", "hidden_size": 8, "emb_size": 8, "pooling": "mean"}
    config = ModelConfig(embedding=("dual",), encoder="dual", target=("clr",), projection=True, feature_size=4,
                         stream_0=stream, stream_1=stream)
    torch.manual_seed(0)
    return TARGETS.get("clr")(config, 11)


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    hidden_0, hidden_1 = torch.randn(6, 5, 8, generator=generator), torch.randn(6, 5, 8, generator=generator)
    return hidden_0, hidden_1, torch.ones(6, 5, dtype=torch.bool)


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        target = clr_target()
        hidden_0, hidden_1, valid = inputs()
        rows = slice(3 * rank, 3 * rank + 3)
        out = target((hidden_0[rows], hidden_1[rows]), None, (valid[rows], valid[rows]))
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in target.named_parameters()}
        for grad in grads.values():
            dist.all_reduce(grad)
            grad /= WORLD  # what DDP does
        torch.save({"loss": out.loss.detach(), "grads": grads, "instances": out.metrics["instances_clr"]},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_each_rank_contrasts_against_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    target = clr_target()
    hidden_0, hidden_1, valid = inputs()
    full = target((hidden_0, hidden_1), None, (valid, valid))
    full.loss.backward()
    for rank in range(WORLD):
        result = torch.load(os.path.join(tmp_path, f"rank{rank}.pt"), weights_only=True)
        assert result["instances"] == 6
        torch.testing.assert_close(result["loss"], full.loss.detach(), atol=1e-6, rtol=1e-6)
        for name, param in target.named_parameters():
            expected = param.grad if name == "logit_scale" else param.grad / WORLD
            torch.testing.assert_close(result["grads"][name], expected, atol=1e-6, rtol=1e-5)
