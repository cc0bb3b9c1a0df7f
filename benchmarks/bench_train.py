"""Training throughput: our trainer's step vs ``transformers.LlamaForCausalLM``, same config, batch, optimizer
and precision, interleaved in one run (identical runs on a shared machine differ by 15-25%, so only the ratio of
interleaved rounds means something).

    python benchmarks/bench_train.py                       # config a: hidden 256, 4 layers, vocab 32000, seq 256, batch 8
    python benchmarks/bench_train.py --precision fp32 bf16 --rounds 3 --steps 3

Prints tokens/s (min / median / max over rounds) for both, the ratio of medians, and MFU against the measured
torch.mm peak of this machine. FLOPs per token = 6 * matmul parameters + 12 * layers * hidden * seq.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from tencentpretrain.config import ModelConfig
from tencentpretrain.data.loader import Batch
from tencentpretrain.models.model import build_model
from tencentpretrain.training.config import OptimConfig
from tencentpretrain.training.engine import LocalEngine
from tencentpretrain.training.optim import build_optimizer, build_scheduler
from tencentpretrain.training.parallel import DistEnv

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        emb_size=args.hidden, hidden_size=args.hidden, feedforward_size=args.ffn, heads_num=args.heads,
        layers_num=args.layers, hidden_act="silu", dropout=0.0, max_seq_length=args.seq, remove_transformer_bias=True,
        remove_embedding_layernorm=True, rotary_position_embedding=True, feed_forward="gated", mask="causal",
        layernorm_positioning="pre", layernorm="rms", layernorm_eps=1e-6,
    )


def ours(config: ModelConfig, args: argparse.Namespace, precision: str, batch: Batch):
    """A closure running one optimizer step of our trainer (LocalEngine: forward, backward, clip, AdamW, schedule)."""
    torch.manual_seed(0)
    model = build_model(config, args.vocab)
    optim = OptimConfig(learning_rate=1e-4, max_grad_norm=1.0)
    optimizer = build_optimizer(model, optim)
    engine = LocalEngine(model, optimizer, build_scheduler(optimizer, optim, 10**6),
                         env=DistEnv(0, 0, 1, torch.device("cpu"), None), precision=precision,
                         max_grad_norm=1.0, accumulation_steps=1)

    def step() -> float:
        out = engine.forward(batch)
        engine.backward(out.loss, last=True)
        engine.step()
        return out.loss.item()

    return step


def hf(config: ModelConfig, args: argparse.Namespace, precision: str, batch: Batch):
    """The same step for transformers.LlamaForCausalLM (sdpa attention), with the same optimizer and clipping."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tencentpretrain.convert.families.llama import hf_config_from_model_config

    torch.manual_seed(0)
    hf_config = LlamaConfig(**hf_config_from_model_config(config, args.vocab))
    model = LlamaForCausalLM(hf_config).train()
    model.config._attn_implementation = "sdpa"
    optim = OptimConfig(learning_rate=1e-4, max_grad_norm=1.0)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, 10**6)
    dtype = DTYPES[precision]
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> float:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            logits = model(input_ids=batch.src).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.tgt.flatten())  # the same T targets per row
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 10) -> float:
    """Measured torch.mm GFLOP/s (best of a few runs) on this machine in ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def flops_per_token(config: ModelConfig, args: argparse.Namespace) -> float:
    h, f, layers = config.hidden_size, config.feedforward_size, config.layers_num
    kv = config.kv_heads_num * config.head_size
    matmul = layers * (2 * h * h + 2 * h * kv + 3 * h * f) + args.vocab * h
    return 6 * matmul + 12 * layers * h * args.seq


def measure(step, tokens: int, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return tokens * steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (("hidden", 256), ("layers", 4), ("heads", 4), ("ffn", 688), ("vocab", 32000),
                          ("seq", 256), ("batch", 8), ("rounds", 3), ("steps", 3), ("warmup", 2)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = model_config(args)
    g = torch.Generator().manual_seed(0)
    src = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g)
    batch = Batch(src[:, :-1], src[:, 1:], torch.ones(args.batch, args.seq, dtype=torch.long),
                  torch.ones(args.batch, args.seq, dtype=torch.bool))
    tokens = args.batch * args.seq
    print(f"config: hidden {args.hidden}, layers {args.layers}, heads {args.heads}, ffn {args.ffn}, vocab {args.vocab}, "
          f"seq {args.seq}, batch {args.batch}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    for precision in args.precision:
        peak = matmul_peak(DTYPES[precision])
        steps = {"ours": ours(config, args, precision, batch), "hf": hf(config, args, precision, batch)}
        for step in steps.values():
            for _ in range(args.warmup):
                step()
        rates: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                rates[name].append(measure(step, tokens, args.steps))
        print(f"\n{precision}: matmul peak {peak:.0f} GFLOP/s")
        for name, r in rates.items():
            mfu = statistics.median(r) * flops_per_token(config, args) / (peak * 1e9)
            print(f"  {name:4s} tokens/s min {min(r):8.1f}  median {statistics.median(r):8.1f}  max {max(r):8.1f}"
                  f"  MFU {100 * mfu:5.1f}%")
        print(f"  ratio ours/hf (medians): {statistics.median(rates['ours']) / statistics.median(rates['hf']):.3f}")


if __name__ == "__main__":
    main()
