"""Encoder-decoder training throughput: our trainer's step on a BART model vs ``transformers``'
``BartForConditionalGeneration``, same weights, batch, optimizer (torch AdamW, clipping 1.0) and precision,
interleaved in one process (identical runs on a shared machine differ by 15-25%, so only the ratio of interleaved
rounds means something).

    python benchmarks/bench_seq2seq.py      # BART-base shape scaled down: d_model 256, 3+3 layers, 4 heads,
                                            # ffn 1024, vocab 8000, batch 8, source 128, target 64
    python benchmarks/bench_seq2seq.py --precision fp32 bf16 --rounds 5 --steps 3
    python benchmarks/bench_seq2seq.py --profile ours    # torch.profiler table of a few steps, then exit

Our model is HF's, loaded through our BART converter (``load_model`` of the saved HF directory), so both start
from the same numbers: the first-step losses are printed side by side. Tokens per step = batch * (source +
target). Prints tokens/s (min / median / max over rounds) for both and their ratios: of the medians, of the
maxima (the least disturbed round of each) and the median of the per-round ratios; then the same for tokens per
CPU-second of this process (``time.process_time``), which other jobs on a shared machine disturb less than the
wall clock.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from tencentpretrain.convert.loading import load_model
from tencentpretrain.data.loader import Seq2SeqBatch
from tencentpretrain.training.config import OptimConfig
from tencentpretrain.training.engine import LocalEngine
from tencentpretrain.training.optim import build_scheduler
from tencentpretrain.training.parallel import DistEnv

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PAD, BOS, EOS = 1, 0, 2
Step = Callable[[], float]


def hf_model(args: argparse.Namespace):
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=args.vocab, d_model=args.hidden, encoder_layers=args.layers, decoder_layers=args.layers,
        encoder_attention_heads=args.heads, decoder_attention_heads=args.heads, encoder_ffn_dim=args.ffn,
        decoder_ffn_dim=args.ffn, max_position_embeddings=max(args.src, args.tgt), dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        decoder_start_token_id=EOS, forced_eos_token_id=None)
    model = BartForConditionalGeneration(config)
    model.config._attn_implementation = "sdpa"
    return model


def make_batch(args: argparse.Namespace) -> Seq2SeqBatch:
    """Random full-length rows (no padding): ``tgt_in`` is ``tgt`` shifted right after the start id."""
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, args.vocab, (args.batch, args.src), generator=g)
    tgt = torch.randint(4, args.vocab, (args.batch, args.tgt), generator=g)
    tgt_in = torch.cat([torch.full((args.batch, 1), EOS), tgt[:, :-1]], 1)
    ones = torch.ones_like(tgt)
    return Seq2SeqBatch(src, tgt, torch.ones_like(src), ones.bool(), tgt_in, ones)


def _optimizer(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return optimizer, build_scheduler(optimizer, OptimConfig(learning_rate=1e-4), 10**6)


def ours(hf_dir: str, precision: str, batch: Seq2SeqBatch) -> Step:
    """One optimizer step of our trainer (LocalEngine: forward, backward, clip, AdamW, schedule)."""
    model = load_model(None, hf_dir).train()
    optimizer, scheduler = _optimizer(model)
    engine = LocalEngine(model, optimizer, scheduler, env=DistEnv(0, 0, 1, torch.device("cpu"), None),
                         precision=precision, max_grad_norm=1.0, accumulation_steps=1)

    def step() -> float:
        out = engine.forward(batch)
        engine.backward(out.loss, last=True)
        engine.step()
        return out.loss.item()

    return step


def hf(model, precision: str, batch: Seq2SeqBatch) -> Step:
    """The same step for BartForConditionalGeneration (its own label loss), same optimizer and clipping."""
    model.train()
    optimizer, scheduler = _optimizer(model)
    dtype = DTYPES[precision]
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> float:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=batch.src, attention_mask=batch.seg, decoder_input_ids=batch.tgt_in,
                         labels=batch.tgt).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def measure(step: Step, tokens: int, steps: int) -> tuple[float, float]:
    """(tokens per wall-clock second, tokens per CPU second of this process) over ``steps`` steps."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return tokens * steps / (time.perf_counter() - start), tokens * steps / (time.process_time() - cpu_start)


def report(rates: dict[str, list[float]], label: str) -> None:
    for name, r in rates.items():
        print(f"  {name:4s} {label:12s} min {min(r):8.1f}  median {statistics.median(r):8.1f}  max {max(r):8.1f}")
    ours_r, hf_r = rates["ours"], rates["hf"]
    print(f"  ratio ours/hf ({label}): medians {statistics.median(ours_r) / statistics.median(hf_r):.3f}, "
          f"maxima {max(ours_r) / max(hf_r):.3f}, per round (median) "
          f"{statistics.median(o / h for o, h in zip(ours_r, hf_r)):.3f}")


def profile(step: Step, steps: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(2):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (("hidden", 256), ("layers", 3), ("heads", 4), ("ffn", 1024), ("vocab", 8000),
                          ("src", 128), ("tgt", 64), ("batch", 8), ("rounds", 9), ("steps", 2), ("warmup", 2)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=list(DTYPES))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--profile", choices=["ours", "hf"], help="print a torch.profiler table of this side and exit")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, tokens = make_batch(args), args.batch * (args.src + args.tgt)
    print(f"config: d_model {args.hidden}, {args.layers}+{args.layers} layers, heads {args.heads}, ffn {args.ffn}, "
          f"vocab {args.vocab}, batch {args.batch}, source {args.src}, target {args.tgt}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as work:
        reference = hf_model(args)
        reference.save_pretrained(work)
        for precision in args.precision:
            steps = {"ours": ours(work, precision, batch), "hf": hf(hf_model(args), precision, batch)}
            if args.profile:
                profile(steps[args.profile], args.steps)
                return
            first = {name: step() for name, step in steps.items()}
            print(f"\n{precision}: first-step loss ours {first['ours']:.5f}  hf {first['hf']:.5f}")
            for step in steps.values():
                for _ in range(args.warmup - 1):
                    step()
            rates: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
            for _ in range(args.rounds):
                for name, step in steps.items():
                    rates[name].append(measure(step, tokens, args.steps))
            for column, label in ((0, "tokens/s"), (1, "tokens/CPU-s")):
                report({name: [r[column] for r in rs] for name, rs in rates.items()}, label)


if __name__ == "__main__":
    main()
