"""Peak resident memory of the LLaMA converters on a model of about 1 GB, as a ratio to the model's size.

Builds a random fp32 LLaMA of about ``--target_gb`` in a temporary directory, then runs each conversion as its
own process (the real entry point) and reads that process's peak RSS from the kernel (``wait4``):

    TencentPretrain .bin -> HF (safetensors shards)   scripts/convert_llama_from_tencentpretrain_to_huggingface.py
    HF (2 safetensors shards) -> TencentPretrain .bin  scripts/convert_llama_from_huggingface_to_tencentpretrain.py

The ratio includes the interpreter and torch themselves (a few hundred MB); the goal is < 1.5.

    python3 benchmarks/bench_convert_memory.py [--target_gb 1.0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch

from tencentpretrain.checkpoint import save_file
from tencentpretrain.config import ModelConfig, save_model_config
from tencentpretrain.convert.stream import expected_shapes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 49953


def benchmark_config(target_bytes: int) -> ModelConfig:
    """A LLaMA of width 1024 (GQA, 4 KV heads) with as many layers as it takes to reach ``target_bytes``."""
    hidden, ffn = 1024, 2816
    per_layer = 4 * (2 * hidden * hidden + 2 * hidden * hidden // 4 + 3 * hidden * ffn + 2 * hidden)
    layers = max(1, round((target_bytes - 4 * (2 * VOCAB * hidden + hidden)) / per_layer))
    return ModelConfig(
        emb_size=hidden, hidden_size=hidden, feedforward_size=ffn, heads_num=16, local_kv_heads_num=4,
        layers_num=layers, vocab_size=VOCAB, max_seq_length=2048, hidden_act="silu", dropout=0.0,
        embedding=("word",), remove_transformer_bias=True, remove_embedding_layernorm=True,
        rotary_position_embedding=True, encoder="transformer", feed_forward="gated", mask="causal",
        layernorm_positioning="pre", layernorm="rms", target=("lm",),
    )


def write_random_model(config: ModelConfig, path: str) -> int:
    """Random fp32 weights for ``config`` at ``path``; returns the file size."""
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=generator) * 0.02 for k, shape in expected_shapes(config).items()}
    save_file(state, path)
    return os.path.getsize(path)


# A child's ru_maxrss includes what it inherited at fork, before exec; so the measured command is started by
# this small launcher process instead of by the benchmark, which holds torch and a model.
LAUNCHER = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
print(usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status))
"""


def peak_rss(command: list[str]) -> tuple[int, float]:
    """Run ``command``; return (its peak resident set in bytes, seconds)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=False)
    seconds = time.perf_counter() - start
    rss, code = (int(x) for x in result.stdout.split())
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return rss, seconds  # ru_maxrss is in KiB on Linux, converted by the launcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target_gb", type=float, default=1.0, help="model size to build, in GB (fp32)")
    args = parser.parse_args()
    config = benchmark_config(int(args.target_gb * 1e9))
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tp_path, config_path = os.path.join(tmp, "model.bin"), os.path.join(tmp, "model_config.json")
        size = write_random_model(config, tp_path)
        save_model_config(config, config_path)
        print(f"model: {config.layers_num} layers, hidden {config.hidden_size}, vocab {VOCAB}, fp32, "
              f"{size / 1e9:.2f} GB")
        hf_dir, back = os.path.join(tmp, "hf"), os.path.join(tmp, "back.bin")
        runs = [
            ("TencentPretrain .bin -> HF safetensors",
             [python, "scripts/convert_llama_from_tencentpretrain_to_huggingface.py", "--input_model_path", tp_path,
              "--config_path", config_path, "--output_model_path", hf_dir, "--max_shard_size", f"{size // 2 + 1}B"]),
            ("HF safetensors (2 shards) -> TencentPretrain .bin",
             [python, "scripts/convert_llama_from_huggingface_to_tencentpretrain.py", "--input_model_path", hf_dir,
              "--output_model_path", back]),
        ]
        baseline, _ = peak_rss([python, "-c", "import tencentpretrain.convert.hf, safetensors.torch"])
        print(f"{'baseline (python + torch + the converter imported)':52s} peak RSS {baseline / 1e9:.2f} GB")
        for name, command in runs:
            rss, seconds = peak_rss(command)
            print(f"{name:52s} peak RSS {rss / 1e9:.2f} GB  ratio {rss / size:.2f}  ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
