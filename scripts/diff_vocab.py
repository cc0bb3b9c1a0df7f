"""Compare two vocabulary files: their sizes, and the sizes of their differences and intersection.

    python scripts/diff_vocab.py --vocab_1 models/google_zh_vocab.txt --vocab_2 my_vocab.txt
"""

from __future__ import annotations

import argparse

from tencentpretrain.cli import run
from tencentpretrain.vocab.adapt import diff_vocabularies


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab_1", required=True, help="first vocabulary file (one token per line)")
    parser.add_argument("--vocab_2", required=True, help="second vocabulary file (one token per line)")
    return parser


def main(argv: list[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    report = diff_vocabularies(args.vocab_1, args.vocab_2)
    print(report, end="")
    return report


if __name__ == "__main__":
    run(main)
