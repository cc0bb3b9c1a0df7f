"""The checks only a GPU can answer, as one command of a few minutes (see benchmarks/gpu_check.sh).

    bash benchmarks/gpu_check.sh              # on a machine with a CUDA GPU
    bash benchmarks/gpu_check.sh --dry_run    # on the CPU at toy sizes: the same code paths (CI runs this)
    bash benchmarks/gpu_check.sh --only train_bf16 sdpa_flash

Each check prints one line, ``PASS <check>: <numbers>``, ``FAIL <check>: <error>`` or ``SKIP <check>: <why>``, and
the exit status is 1 when any failed. A failing check does not stop the others.

- device: what torch sees (GPU name, memory, bf16, torch and CUDA versions).
- train_bf16: bf16 mixed-precision training steps of the ~1B LLaMA config (models/llama/1b_config.json) through
  our LocalEngine; tokens/s and MFU against the bf16 matmul peak measured on the same device; the loss must fall
  on the repeated batch.
- sdpa_flash: the model's attention (grouped-query, causal) under SDPA's flash backend only, in bf16, against the
  math backend in fp32.
- generate_kv_cache: greedy decoding with the KV cache equals step-by-step recomputation without it (fp32), and
  decode tokens/s of the 1B model in bf16 at batch 1 and 8.
- int8, int4: quantized weights on the device, the rest in inference's default dtype (bf16 on a GPU); logits'
  cosine to the unquantized model and decode tokens/s.
- deepspeed_zero3: pretrain.py under the deepspeed launcher, one process, ZeRO-3 (nccl on a GPU, gloo here).
- server: inference/llama_server.py on the device answers /health and a completion.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tencentpretrain.checkpoint import save_checkpoint  # noqa: E402
from tencentpretrain.config import ModelConfig, load_model_config, save_model_config  # noqa: E402
from tencentpretrain.data.loader import Batch  # noqa: E402
from tencentpretrain.generation import GenerationConfig, generate  # noqa: E402
from tencentpretrain.models.model import build_model  # noqa: E402
from tencentpretrain.training.config import OptimConfig  # noqa: E402
from tencentpretrain.training.engine import LocalEngine  # noqa: E402
from tencentpretrain.training.optim import build_optimizer, build_scheduler  # noqa: E402
from tencentpretrain.training.parallel import DistEnv, free_port  # noqa: E402
from tencentpretrain.transforms.quantize import quantize_model  # noqa: E402

SPM = REPO / "tests" / "assets" / "tiny_spm.model"
CORPUS = REPO / "tests" / "assets" / "tiny_spm_corpus.txt"
TINY_LLAMA = REPO / "models" / "llama" / "tiny_config.json"


class Skip(Exception):
    """A check that does not apply here (the reason is printed)."""


@dataclass
class Context:
    device: torch.device
    dry_run: bool
    work: Path
    config: ModelConfig  # the model the speed checks train and decode
    vocab: int
    seq: int
    batch: int
    steps: int
    model: torch.nn.Module | None = None  # trained by train_bf16, reused by the decoding checks


def make_context(dry_run: bool, work: Path) -> Context:
    device = torch.device("cpu" if dry_run else "cuda")
    if dry_run:
        config = load_model_config(str(TINY_LLAMA)).replace(dropout=0.0)
        return Context(device, True, work, config, vocab=512, seq=64, batch=2, steps=2)
    config = load_model_config(str(REPO / "models" / "llama" / "1b_config.json"))
    return Context(device, False, work, config, vocab=32000, seq=2048, batch=2, steps=5)


# ---------------------------------------------------------------------- checks
def check_device(ctx: Context) -> str:
    if ctx.dry_run:
        return f"cpu (dry run), torch {torch.__version__}"
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible (run with --dry_run on the CPU)")
    props = torch.cuda.get_device_properties(ctx.device)
    return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}, "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}")


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """Measured GFLOP/s of an n x n matmul on ``device`` (best of 3 timings of 10)."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    torch.mm(a, b)
    best = 0.0
    for _ in range(3):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        synchronize(device)
        best = max(best, 2 * n**3 * 10 / (time.perf_counter() - start) / 1e9)
    return best


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_token(config: ModelConfig, vocab: int, seq: int) -> float:
    h, f, layers = config.hidden_size, config.feedforward_size, config.layers_num
    kv = config.kv_heads_num * config.head_size
    matmul = layers * (2 * h * h + 2 * h * kv + 3 * h * f) + vocab * h
    return 6 * matmul + 12 * layers * h * seq


def check_train_bf16(ctx: Context) -> str:
    torch.manual_seed(0)
    model = build_model(ctx.config, ctx.vocab).to(ctx.device)
    optim = OptimConfig(learning_rate=1e-3, max_grad_norm=1.0, warmup=0.0)
    optimizer = build_optimizer(model, optim)
    engine = LocalEngine(model, optimizer, build_scheduler(optimizer, optim, 10**6),
                         env=DistEnv(0, 0, 1, ctx.device, None), precision="bf16", max_grad_norm=1.0,
                         accumulation_steps=1)
    ids = torch.randint(0, ctx.vocab, (ctx.batch, ctx.seq + 1), device=ctx.device)
    real = torch.ones_like(ids[:, :-1])
    batch = Batch(src=ids[:, :-1], tgt=ids[:, 1:], seg=real, loss_mask=real.bool())
    losses = []

    def step() -> None:
        out = engine.forward(batch)
        engine.backward(out.loss, last=True)
        engine.step()
        losses.append(out.loss.item())

    for _ in range(2):  # warm-up (kernels, allocator)
        step()
    synchronize(ctx.device)
    start = time.perf_counter()
    for _ in range(ctx.steps):
        step()
    synchronize(ctx.device)
    tokens_per_s = ctx.batch * ctx.seq * ctx.steps / (time.perf_counter() - start)
    if not losses[-1] < losses[0]:
        raise RuntimeError(f"the loss did not fall on a repeated batch: {[round(x, 3) for x in losses]}")
    peak = matmul_peak(ctx.device, torch.bfloat16, 512 if ctx.dry_run else 8192)
    mfu = tokens_per_s * flops_per_token(ctx.config, ctx.vocab, ctx.seq) / (peak * 1e9)
    memory = f", peak memory {torch.cuda.max_memory_allocated(ctx.device) / 2**30:.1f} GiB" \
        if ctx.device.type == "cuda" else ""
    parameters = sum(p.numel() for p in model.parameters())
    ctx.model = model.eval()
    return (f"{parameters / 1e9:.2f}B parameters, batch {ctx.batch} x {ctx.seq}: {tokens_per_s:.0f} tokens/s, "
            f"MFU {100 * mfu:.1f}% of the measured bf16 matmul peak {peak / 1000:.1f} TFLOP/s{memory}; "
            f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")


def check_sdpa_flash(ctx: Context) -> str:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from tencentpretrain.layers.attention import MultiHeadedAttention

    c = ctx.config
    torch.manual_seed(0)
    attn = MultiHeadedAttention(c.hidden_size, c.heads_num, c.head_size, kv_heads_num=c.kv_heads_num, bias=False)
    attn = attn.to(ctx.device).eval()
    x = torch.randn(2, min(ctx.seq, 512), c.hidden_size, device=ctx.device)
    with torch.no_grad():
        with sdpa_kernel([SDPBackend.MATH]):
            reference = attn(x)  # fp32, causal (no mask)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast(ctx.device.type, dtype=torch.bfloat16):
            flash = attn(x)
    diff = (flash.float() - reference).abs().max().item()
    if diff > 5e-2 * reference.abs().max().item():
        raise RuntimeError(f"flash output differs from math by {diff:.3g}")
    return f"causal GQA ({c.heads_num} query / {c.kv_heads_num} kv heads) runs on the flash kernel; max diff {diff:.2e}"


def check_generate_kv_cache(ctx: Context) -> str:
    torch.manual_seed(1)
    small = build_model(load_model_config(str(TINY_LLAMA)).replace(dropout=0.0), 512).to(ctx.device).eval()
    prompt = torch.randint(0, 512, (1, 12)).tolist()
    cached = generate(small, None, prompt, GenerationConfig(max_new_tokens=16, stop_at_eos=False))[0].token_ids
    ids = list(prompt[0])
    with torch.no_grad():
        for _ in range(16):  # recompute the whole sequence at every step, no cache
            ids.append(int(small.logits(torch.tensor([ids], device=ctx.device))[0, -1].argmax()))
    if cached != ids[12:]:
        raise RuntimeError(f"cached greedy tokens {cached} differ from recomputation {ids[12:]}")
    model = require_trained_model(ctx).to(torch.bfloat16)
    rates = {b: decode_rate(model, ctx, b) for b in (1, 8)}
    return ("cached greedy = recomputed (fp32); bf16 decode " +
            ", ".join(f"batch {b}: {r:.0f} tokens/s" for b, r in rates.items()))


def require_trained_model(ctx: Context) -> torch.nn.Module:
    if ctx.model is None:
        torch.manual_seed(0)
        ctx.model = build_model(ctx.config, ctx.vocab).to(ctx.device).eval()
    return ctx.model


def decode_rate(model: torch.nn.Module, ctx: Context, batch: int, new_tokens: int = 32) -> float:
    prompts = torch.randint(0, ctx.vocab, (batch, 32)).tolist()
    config = GenerationConfig(max_new_tokens=new_tokens, stop_at_eos=False)
    generate(model, None, prompts, config, batch_size=batch, max_length=32 + new_tokens)  # warm-up
    synchronize(ctx.device)
    start = time.perf_counter()
    generate(model, None, prompts, config, batch_size=batch, max_length=32 + new_tokens)
    synchronize(ctx.device)
    return batch * new_tokens / (time.perf_counter() - start)


def quantized_check(ctx: Context, mode: str, min_cosine: float) -> str:
    import copy

    # the dtype inference gives the rest of the model by default: bf16 on a GPU, fp32 on the CPU
    reference = require_trained_model(ctx).to(torch.bfloat16 if ctx.device.type == "cuda" else torch.float32)
    quantized = quantize_model(copy.deepcopy(reference), mode)
    ids = torch.randint(0, ctx.vocab, (1, 64), device=ctx.device)
    with torch.no_grad():
        a, b = reference.logits(ids).float().flatten(), quantized.logits(ids).float().flatten()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    if cosine < min_cosine:
        raise RuntimeError(f"logits cosine {cosine:.4f} to the unquantized model is below {min_cosine}")
    return f"{next(reference.parameters()).dtype} activations, logits cosine {cosine:.4f} to unquantized; decode batch 1: {decode_rate(quantized, ctx, 1):.0f} tokens/s"


def check_deepspeed_zero3(ctx: Context) -> str:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise Skip("deepspeed is not installed") from None
    dataset = ctx.work / "dataset"
    run([sys.executable, str(REPO / "preprocess.py"), "--corpus_path", str(CORPUS), "--spm_model_path", str(SPM),
         "--dataset_path", str(dataset), "--seq_length", "64", "--data_processor", "lm"])
    config = "deepspeed_zero3_cpu_config.json" if ctx.dry_run else "deepspeed_zero3_bf16_config.json"
    out = run([sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", "--master_port",
               str(free_port()), str(REPO / "pretrain.py"), "--deepspeed", "--enable_zero3", "--deepspeed_config",
               str(REPO / "models" / config), "--dataset_path", str(dataset), "--spm_model_path", str(SPM),
               "--config_path", str(TINY_LLAMA), "--output_model_path", str(ctx.work / "zero3.bin"),
               "--total_steps", "6", "--save_checkpoint_steps", "6", "--report_steps", "3", "--batch_size", "4"])
    if not (ctx.work / "zero3.bin").exists():
        raise RuntimeError(f"no model saved; log tail: {out[-500:]}")
    return f"ZeRO-3 on {'gloo (dry run)' if ctx.dry_run else 'nccl'}, 6 steps, model saved and consolidated"


def check_server(ctx: Context) -> str:
    import httpx
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_file=str(SPM)).get_piece_size()
    config = load_model_config(str(TINY_LLAMA)).replace(dropout=0.0)
    save_checkpoint(build_model(config, vocab), str(ctx.work / "server.bin"))
    save_model_config(config, str(ctx.work / "server_config.json"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(REPO / "inference" / "llama_server.py"), "--load_model_path", str(ctx.work / "server.bin"),
         "--config_path", str(ctx.work / "server_config.json"), "--spm_model_path", str(SPM), "--port", str(port),
         "--device", ctx.device.type, "--seq_length", "128"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the server did not start: {server.stderr.read().decode()[-500:]}") from None
                time.sleep(0.5)
        reply = httpx.post(f"{base}/v1/completions", json={"prompt": "hello", "max_tokens": 8, "temperature": 0},
                           timeout=60)
        reply.raise_for_status()
        tokens = reply.json()["usage"]["completion_tokens"]
        return f"/health {health.status_code} {health.text[:80]!r}; a completion of {tokens} tokens"
    finally:
        server.terminate()
        server.wait(timeout=30)


def run(command: list[str]) -> str:
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[1]).name if len(command) > 1 else command[0]} exited with "
                           f"{done.returncode}: {(done.stderr or done.stdout)[-800:]}")
    return done.stdout + done.stderr


CHECKS: dict[str, Callable[[Context], str]] = {
    "device": check_device,
    "train_bf16": check_train_bf16,
    "sdpa_flash": check_sdpa_flash,
    "generate_kv_cache": check_generate_kv_cache,
    "int8": lambda ctx: quantized_check(ctx, "int8", 0.99),
    "int4": lambda ctx: quantized_check(ctx, "int4", 0.9),
    "deepspeed_zero3": check_deepspeed_zero3,
    "server": check_server,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry_run", action="store_true", help="CPU, toy sizes: exercise the checks' code paths")
    p.add_argument("--only", nargs="+", choices=list(CHECKS), help="run these checks only")
    args = p.parse_args(argv)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        ctx = make_context(args.dry_run, Path(work))
        for name in args.only or CHECKS:
            start = time.perf_counter()
            try:
                line = f"PASS {name}: {CHECKS[name](ctx)}"
            except Skip as e:
                line = f"SKIP {name}: {e}"
            except Exception as e:  # noqa: BLE001 - every failure is reported and the next check runs
                failed += 1
                where = traceback.extract_tb(e.__traceback__)[-1]
                line = f"FAIL {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} " \
                       f"({Path(where.filename).name}:{where.lineno})"
            print(f"{line} [{time.perf_counter() - start:.0f} s]", flush=True)
    print(json.dumps({"failed": failed, "dry_run": args.dry_run, "device": str(ctx.device)}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
