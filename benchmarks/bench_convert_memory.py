"""Peak resident memory of the HF converters (LLaMA and BERT) on models of about 1 GB, as ratios.

For each family, builds a random fp32 model of about ``--target_gb`` in a temporary directory, then runs each
conversion as its own process (the real entry point, the one shard-by-shard driver every family uses) and
reads that process's peak RSS from the kernel (``wait4``):

    TencentPretrain .bin -> HF (2 safetensors shards)  scripts/convert_<family>_from_tencentpretrain_to_huggingface.py
    HF (2 safetensors shards) -> TencentPretrain .bin  scripts/convert_<family>_from_huggingface_to_tencentpretrain.py

Printed: the peak RSS, its ratio to the model's size (it includes the interpreter and torch themselves, the
baseline line), and ``over model / shard``: (peak - baseline - model) / largest shard, the memory a conversion
needs beyond the model itself, counted in shards. The goal is a peak <= the model + 1.5 x the largest shard.

    python3 benchmarks/bench_convert_memory.py [--target_gb 1.0] [--families llama bert]
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
BERT_VOCAB = 30522


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


def bert_benchmark_config(target_bytes: int) -> ModelConfig:
    """A BERT-large-width MLM model (HF BertForMaskedLM's computation) with as many layers as reach ``target_bytes``."""
    hidden, ffn, positions = 1024, 4096, 512
    per_layer = 4 * (4 * hidden * hidden + 2 * hidden * ffn + ffn + 9 * hidden)
    head_and_embeddings = 4 * ((BERT_VOCAB + positions + 3) * hidden + hidden * hidden + 4 * hidden + BERT_VOCAB)
    layers = max(1, round((target_bytes - head_and_embeddings) / per_layer))
    return ModelConfig(
        emb_size=hidden, hidden_size=hidden, feedforward_size=ffn, heads_num=16, layers_num=layers,
        vocab_size=BERT_VOCAB, max_seq_length=positions, hidden_act="gelu", dropout=0.0,
        embedding=("word", "pos", "seg"), encoder="transformer", mask="fully_visible", layernorm_positioning="post",
        layernorm="standard", layernorm_eps=1e-12, feed_forward="dense", target=("mlm",), tie_weights=True,
    )


FAMILIES = {"llama": benchmark_config, "bert": bert_benchmark_config}


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


def bench_family(family: str, target_bytes: int, tmp: str, baseline: int) -> None:
    python = sys.executable
    config = FAMILIES[family](target_bytes)
    tp_path, config_path = os.path.join(tmp, f"{family}.bin"), os.path.join(tmp, f"{family}_config.json")
    size = write_random_model(config, tp_path)
    save_model_config(config, config_path)
    shard = size // 2 + 1
    print(f"{family}: {config.layers_num} layers, hidden {config.hidden_size}, vocab {config.vocab_size}, fp32, "
          f"{size / 1e9:.2f} GB; HF shards of at most {shard / 1e9:.2f} GB")
    hf_dir, back = os.path.join(tmp, f"{family}_hf"), os.path.join(tmp, f"{family}_back.bin")
    runs = [
        ("TencentPretrain .bin -> HF safetensors",
         [python, f"scripts/convert_{family}_from_tencentpretrain_to_huggingface.py", "--input_model_path", tp_path,
          "--config_path", config_path, "--output_model_path", hf_dir, "--max_shard_size", f"{shard}B"]),
        ("HF safetensors (2 shards) -> TencentPretrain .bin",
         [python, f"scripts/convert_{family}_from_huggingface_to_tencentpretrain.py", "--input_model_path", hf_dir,
          "--output_model_path", back]),
    ]
    for name, command in runs:
        rss, seconds = peak_rss(command)
        print(f"  {name:50s} peak RSS {rss / 1e9:.2f} GB  ratio {rss / size:.2f}  "
              f"over model / shard {(rss - baseline - size) / shard:+.2f}  ({seconds:.0f} s)")
    for path in (tp_path, back):
        os.remove(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target_gb", type=float, default=1.0, help="model size to build, in GB (fp32)")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    args = parser.parse_args()
    python = sys.executable
    baseline, _ = peak_rss([python, "-c", "import tencentpretrain.convert.hf, safetensors.torch"])
    print(f"{'baseline (python + torch + the converter imported)':52s} peak RSS {baseline / 1e9:.2f} GB")
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            bench_family(family, int(args.target_gb * 1e9), tmp, baseline)


if __name__ == "__main__":
    main()
