"""Preprocessing throughput next to plain SentencePiece encoding of the same text.

Both sides use the same number of processes and the same byte ranges of the corpus; the baseline only reads the
lines of its range and calls ``SentencePieceProcessor.encode`` on each. Both rates divide the baseline's token
count by the wall time, so the ratio is the share of time spent tokenizing (1.0 = no overhead).

    python benchmarks/bench_preprocess.py --corpus_path data/zh_corpus.txt --processes_num 2 --copies 20
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import sentencepiece

from tencentpretrain.data.builder import build_dataset, default_chunk_bytes, split_ranges
from tencentpretrain.data.config import DataConfig
from tencentpretrain.tokenizers import TokenizerConfig

ROOT = Path(__file__).resolve().parents[1]
_SP: dict[str, sentencepiece.SentencePieceProcessor] = {}


def _init(model_path: str) -> None:
    _SP["sp"] = sentencepiece.SentencePieceProcessor(model_file=model_path)


def _encode_range(job: tuple[str, int, int]) -> int:
    path, start, end = job
    sp, count = _SP["sp"], 0
    with open(path, "rb") as f:
        pos = start
        if start > 0:
            f.seek(start - 1)
            pos = start - 1 + len(f.readline())
        while pos < end:
            raw = f.readline()
            if not raw:
                break
            pos += len(raw)
            count += len(sp.encode(raw.decode("utf-8").strip()))
    return count


def baseline(corpus: str, model: str, processes: int) -> tuple[int, float]:
    """(tokens, seconds) of plain encoding in ``processes`` processes."""
    size = Path(corpus).stat().st_size
    jobs = [(corpus, t.start, t.end) for t in split_ranges(size, default_chunk_bytes(size, processes))]
    start = time.perf_counter()
    if processes == 1:
        _init(model)
        tokens = sum(map(_encode_range, jobs))
    else:
        with multiprocessing.get_context().Pool(processes, initializer=_init, initargs=(model,)) as pool:
            tokens = sum(pool.imap_unordered(_encode_range, jobs))
    return tokens, time.perf_counter() - start


def preprocess(args: argparse.Namespace) -> tuple[int, float]:
    """(stored tokens, seconds) of ``build_dataset`` into a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        config = DataConfig(
            corpus_path=args.corpus_path, dataset_path=str(Path(tmp) / "dataset.pt"),
            data_processor=args.data_processor, seq_length=args.seq_length, processes_num=args.processes_num,
            json_format_corpus=args.json_format_corpus,
        )
        start = time.perf_counter()
        manifest = build_dataset(config, TokenizerConfig(spm_model_path=args.spm_model_path))
        return manifest["counts"]["tokens"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus_path", default=str(ROOT / "data" / "zh_corpus.txt"), help="one document per line")
    parser.add_argument("--spm_model_path", default=str(ROOT / "tests" / "assets" / "tiny_spm.model"))
    parser.add_argument("--processes_num", type=int, default=1)
    parser.add_argument("--data_processor", default="lm", help="a processor that reads plain text lines")
    parser.add_argument("--json_format_corpus", action="store_true")
    parser.add_argument("--seq_length", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the fastest counts")
    parser.add_argument("--copies", type=int, default=1, help="measure on the corpus repeated this many times")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.copies > 1:
            corpus = Path(tmp) / "corpus.txt"
            corpus.write_bytes(Path(args.corpus_path).read_bytes() * args.copies)
            args.corpus_path = str(corpus)
        run(args)


def run(args: argparse.Namespace) -> None:
    """Measure both sides and print the rates and their ratio."""
    base = min((baseline(args.corpus_path, args.spm_model_path, args.processes_num) for _ in range(args.repeat)),
               key=lambda r: r[1])
    pre = min((preprocess(args) for _ in range(args.repeat)), key=lambda r: r[1])
    tokens = base[0]
    print(f"corpus: {args.corpus_path} x{args.copies} ({Path(args.corpus_path).stat().st_size / 1e6:.2f} MB), "
          f"processes: {args.processes_num}, tokenizer: {args.spm_model_path}")
    print(f"sentencepiece encode: {tokens / base[1]:>12,.0f} tokens/s ({tokens:,} tokens in {base[1]:.3f} s)")
    print(f"preprocess.py       : {tokens / pre[1]:>12,.0f} tokens/s ({pre[0]:,} tokens stored in {pre[1]:.3f} s)")
    print(f"ratio preprocess / encode: {base[1] / pre[1]:.2f}")


if __name__ == "__main__":
    main()
