"""Regenerate ``tests/assets/original_processors/``: what the ORIGINAL TencentPretrain's preprocess.py stores for
small corpora, for the processors whose stored instances involve no randomness (or whose randomness is moved to
batch time by ``--dynamic_masking``). tests/data/test_original_processors.py checks that ours stores the same.

    git -C <mirror of Tencent/TencentPretrain> archive HEAD | tar -x -C /tmp/orig   # mkdir /tmp/orig first
    python tests/assets/make_original_processors.py --original /tmp/orig

The corpora are the first lines of data/zh_corpus.txt (our own), reshaped per processor; the vocabulary is
models/google_zh_vocab.txt (the original's). The original's output is a pickle stream of tuples of ints and lists;
it is read here with an unpickler that refuses every global, and written as ``<name>.json`` (one list per
instance, as the original stored it) next to the corpus and the flags used (``commands.json``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(__file__).resolve().parent / "original_processors"
VOCAB = REPO / "models" / "google_zh_vocab.txt"

# name: (corpus file, flags after --corpus_path/--dataset_path/--vocab_path)
RUNS = {
    "mt": ("pairs.tsv", ["--data_processor", "mt", "--seq_length", "48", "--tgt_seq_length", "40",
                         "--tgt_tokenizer", "bert", "--tgt_vocab_path", str(VOCAB)]),
    "prefixlm": ("pairs.tsv", ["--data_processor", "prefixlm", "--seq_length", "64"]),
    "cls": ("labeled.tsv", ["--data_processor", "cls", "--seq_length", "40"]),
    "cls_mlm": ("labeled.tsv", ["--data_processor", "cls_mlm", "--seq_length", "40", "--dynamic_masking"]),
    "bilm": ("lines.txt", ["--data_processor", "bilm", "--seq_length", "32"]),
    "gsg": ("documents.txt", ["--data_processor", "gsg", "--seq_length", "48", "--tgt_seq_length", "32",
                              "--dup_factor", "1", "--sentence_selection_strategy", "lead"]),
    "mlm_full_sentences": ("lines.txt", ["--data_processor", "mlm", "--seq_length", "32", "--full_sentences",
                                         "--dynamic_masking"]),
    "t5": ("lines.txt", ["--data_processor", "t5", "--seq_length", "32", "--dynamic_masking"]),
}


class NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> None:  # the original stores plain tuples only
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def read_instances(path: Path) -> list:
    instances = []
    with open(path, "rb") as f:
        data = io.BytesIO(f.read())
    while data.tell() < len(data.getbuffer()):
        instances.append(NoGlobals(data).load())
    return instances


def write_corpora(out: Path) -> None:
    """Corpora cut from the first lines of data/zh_corpus.txt: lines, documents, source/target pairs, labels."""
    lines = [line.strip() for line in (REPO / "data" / "zh_corpus.txt").read_text(encoding="utf-8").splitlines()
             if line.strip()][:10]
    (out / "lines.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    documents = []
    for line in lines[:6]:
        sentences = [s + "。" for s in line.split("。") if s.strip()]
        documents.append("\n".join(sentences))
    (out / "documents.txt").write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    pairs = [f"{line[: len(line) // 3]}\t{line[len(line) // 3 :][:50]}" for line in lines]
    (out / "pairs.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    labeled = [f"{i % 2}\t{line[:30]}" if i % 3 else f"{i % 2}\t{line[:20]}\t{line[20:45]}"
               for i, line in enumerate(lines)]
    (out / "labeled.tsv").write_text("\n".join(labeled) + "\n", encoding="utf-8")


def run_original(original: Path, corpus: Path, flags: list[str], dataset: Path) -> None:
    command = [sys.executable, "preprocess.py", "--corpus_path", str(corpus), "--dataset_path", str(dataset),
               "--vocab_path", str(VOCAB), *flags]
    done = subprocess.run(command, cwd=original, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": ""})
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--original", required=True, type=Path, help="checkout of the original TencentPretrain")
    p.add_argument("--out", type=Path, default=ASSETS)
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_corpora(out)
    commands = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (corpus, flags) in RUNS.items():
            dataset = Path(tmp) / f"{name}.pt"
            run_original(args.original.resolve(), out / corpus, flags, dataset)
            instances = read_instances(dataset)
            (out / f"{name}.json").write_text(json.dumps(instances, ensure_ascii=False) + "\n", encoding="utf-8")
            commands[name] = {"corpus": corpus,
                              "flags": [f if f != str(VOCAB) else "models/google_zh_vocab.txt" for f in flags]}
    (out / "commands.json").write_text(json.dumps(commands, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
