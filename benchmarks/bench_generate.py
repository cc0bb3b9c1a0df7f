"""Decode speed on the same weights: our generator (fp32, int8, int4) vs transformers generate() (fp32), and the
server's total throughput with 8 concurrent streaming clients vs 1.

Greedy decoding of ``--new_tokens`` tokens after a ``--prompt_tokens`` prompt, random weights (speed does not
depend on their values), eos disabled. Rounds are interleaved and the median per variant is reported, because
identical runs on shared machines differ by 15-25%.

    python benchmarks/bench_generate.py                      # hidden 256, 4 layers, vocab 32000
    python benchmarks/bench_generate.py --server_only        # only the server's 8 clients vs 1
    python benchmarks/bench_generate.py --hidden_size 512 --layers_num 8 --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import httpx
import torch

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.config import ModelConfig, save_model_config
from tencentpretrain.convert.families.llama import hf_config_from_model_config, llama_hf_weight_map
from tencentpretrain.generation import GenerationConfig, generate
from tencentpretrain.models.model import build_model
from tencentpretrain.transforms.quantize import optimize_for_inference, quantize_model, weight_memory_bytes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def llama_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        emb_size=args.hidden_size, hidden_size=args.hidden_size, feedforward_size=args.feedforward_size,
        heads_num=args.heads_num, layers_num=args.layers_num, hidden_act="silu", dropout=0.0, max_seq_length=2048,
        embedding=("word",), remove_transformer_bias=True, remove_embedding_layernorm=True,
        rotary_position_embedding=True, encoder="transformer", feed_forward="gated", mask="causal",
        layernorm_positioning="pre", layernorm="rms", target=("lm",),
    )


def hf_model(model, config: ModelConfig, vocab: int):
    import transformers

    hf_config = transformers.LlamaConfig(**hf_config_from_model_config(config, vocab))
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    state = llama_hf_weight_map(config).to_external(model.state_dict())
    hf.load_state_dict(state, strict=False)  # rotary inv_freq buffers are not weights
    return hf


def time_ours(model, prompts: list[list[int]], new_tokens: int) -> float:
    config = GenerationConfig(max_new_tokens=new_tokens, stop_at_eos=False)
    start = time.perf_counter()
    out = generate(model, None, prompts, config, batch_size=len(prompts), max_length=len(prompts[0]) + new_tokens)
    elapsed = time.perf_counter() - start
    assert all(len(c.token_ids) == new_tokens for c in out)
    return len(prompts) * new_tokens / elapsed


def time_hf(hf, prompts: list[list[int]], new_tokens: int) -> float:
    ids = torch.tensor(prompts)
    start = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == ids.shape[1] + new_tokens
    return len(prompts) * new_tokens / elapsed


def start_server(model, config, spm_path: str, workdir: str) -> tuple[subprocess.Popen, int]:
    """``inference/llama_server.py`` in its own process with its default settings, as deployed (the clients
    do not share its interpreter)."""
    save_checkpoint(model, os.path.join(workdir, "model.bin"))
    save_model_config(config, os.path.join(workdir, "config.json"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, os.path.join(REPO_ROOT, "inference", "llama_server.py"), "--load_model_path",
               os.path.join(workdir, "model.bin"), "--config_path", os.path.join(workdir, "config.json"),
               "--spm_model_path", spm_path, "--port", str(port), "--batch_size", "8", "--seq_length", "512"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server, port
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start within 120 s")


def time_server(sessions: list[httpx.Client], port: int, new_tokens: int) -> float:
    """Total streamed tokens/s of one concurrent streaming request per session to the server on ``port``.

    The sessions (one per client, each with its own connection) are made before the clock starts: building an
    httpx.Client costs about 20 ms of CPU, which belongs to no server and, on 2 cores, would be taken from it."""
    counts = [0] * len(sessions)

    def client(i: int) -> None:
        body = {"prompt": f"北京是中国的首都{i}", "max_tokens": new_tokens, "stream": True, "temperature": 0,
                "stop": [], "stream_options": {"include_usage": True}}  # the last chunk: the usage
        last = ""
        with sessions[i].stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    last = line  # parsed once at the end: the clients share these 2 cores with the server
        counts[i] = json.loads(last[6:])["usage"]["completion_tokens"]

    start = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(len(sessions))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--feedforward_size", type=int, default=704)
    parser.add_argument("--heads_num", type=int, default=4)
    parser.add_argument("--layers_num", type=int, default=4)
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--prompt_tokens", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip_server", action="store_true")
    parser.add_argument("--server_only", action="store_true", help="only the server's 8 clients vs 1")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = llama_config(args)
    if not args.server_only:
        bench_generators(args, config)
    if not args.skip_server:
        bench_server(args, config)


def bench_generators(args: argparse.Namespace, config: ModelConfig) -> None:
    """Decode tokens/s at batch 1 and 8 of each variant on the same weights, with ratios."""
    base = build_model(config, args.vocab_size).eval()
    variants = {
        "ours fp32": optimize_for_inference(copy.deepcopy(base)),
        "ours fp32 (plain nn.Linear)": base,
        "ours int8": quantize_model(copy.deepcopy(base), "int8"),
        "ours int4": quantize_model(copy.deepcopy(base), "int4"),
        "transformers fp32": hf_model(base, config, args.vocab_size),
    }
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for batch in (1, 8):
            prompts = torch.randint(3, args.vocab_size, (batch, args.prompt_tokens)).tolist()
            for name, model in variants.items():
                timer = time_hf if name.startswith("transformers") else time_ours
                rates.setdefault((name, batch), []).append(timer(model, prompts, args.new_tokens))
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"config: hidden {args.hidden_size}, layers {args.layers_num}, heads {args.heads_num}, "
          f"ffn {args.feedforward_size}, vocab {args.vocab_size}; prompt {args.prompt_tokens}, "
          f"{args.new_tokens} new tokens, greedy, {args.threads} threads, median of {args.rounds} rounds")
    fp32_bytes = weight_memory_bytes(base)
    print(f"{'variant':36s} {'batch 1 tok/s':>14s} {'batch 8 tok/s':>14s} {'weights MiB':>12s}")
    for name, model in variants.items():
        mem = weight_memory_bytes(model) / 2**20 if name.startswith("ours") else fp32_bytes / 2**20
        print(f"{name:36s} {median[(name, 1)]:14.1f} {median[(name, 8)]:14.1f} {mem:12.1f}")
    for batch in (1, 8):
        hf = median[("transformers fp32", batch)]
        fp32 = median[("ours fp32", batch)]
        print(f"batch {batch}: ours fp32 / transformers = {fp32 / hf:.2f}x; int8 / ours fp32 = "
              f"{median[('ours int8', batch)] / fp32:.2f}x; int4 / ours fp32 = {median[('ours int4', batch)] / fp32:.2f}x")


def bench_server(args: argparse.Namespace, config: ModelConfig) -> None:
    """Total streamed tokens/s of inference/llama_server.py with 8 concurrent clients vs 1, serving the same
    weights as the generator comparison (seed 0, vocab ``--vocab_size``)."""
    torch.manual_seed(0)
    model = build_model(config, args.vocab_size).eval()
    with tempfile.TemporaryDirectory() as workdir:
        spm = padded_tokenizer(os.path.join(REPO_ROOT, "tests", "assets", "tiny_spm.model"), args.vocab_size,
                               os.path.join(workdir, "tokenizer.model"))
        server, port = start_server(model, config, spm, workdir)
        sessions = [httpx.Client(timeout=600) for _ in range(8)]
        try:
            time_server(sessions, port, 8)  # warm-up: every session connects
            one = statistics.median(time_server(sessions[:1], port, args.new_tokens) for _ in range(args.rounds))
            eight = statistics.median(time_server(sessions, port, args.new_tokens) for _ in range(args.rounds))
        finally:
            for session in sessions:
                session.close()
            server.terminate()
            server.wait(60)
    print(f"server (inference/llama_server.py in its own process, streaming, vocab {args.vocab_size}): "
          f"1 client {one:.1f} tok/s, 8 clients {eight:.1f} tok/s total = {eight / one:.2f}x")


def padded_tokenizer(spm_path: str, vocab_size: int, out_path: str) -> str:
    """A copy of the SentencePiece model at ``spm_path`` with pieces appended up to ``vocab_size``, so that a
    model with a LLaMA-sized vocabulary can be served: the test tokenizer has 700 pieces. The extra pieces are
    pairs of CJK characters scored below every real piece (so prompts tokenize as before); a random model
    samples them like any other piece, and the speed of streaming does not depend on what text they hold."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    with open(spm_path, "rb") as f:
        proto.ParseFromString(f.read())
    if vocab_size < len(proto.pieces):
        raise ValueError(f"--vocab_size {vocab_size} is below the test tokenizer's {len(proto.pieces)} pieces")
    existing = {p.piece for p in proto.pieces}
    lowest = min(p.score for p in proto.pieces)
    first, count = 0x4E00, 20000  # the CJK Unified Ideographs block
    for i in range(count * count):
        if len(proto.pieces) >= vocab_size:
            break
        text = chr(first + i % count) + chr(first + i // count)
        if text not in existing:
            proto.pieces.add(piece=text, score=lowest - 1 - len(proto.pieces) * 1e-3, type=1)  # 1 = NORMAL
    with open(out_path, "wb") as f:
        f.write(proto.SerializeToString())
    return out_path


if __name__ == "__main__":
    main()
