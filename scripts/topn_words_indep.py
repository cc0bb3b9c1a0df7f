"""For each word of --test_path (first field of a line), print the --topn vocabulary entries whose word
embeddings are closest to it by cosine (context-independent neighbours).

    python scripts/topn_words_indep.py --load_model_path models/bert.bin --vocab_path models/google_zh_vocab.txt \\
        --test_path target_words.txt
"""

from __future__ import annotations

import argparse

from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.cli import run
from tencentpretrain.evaluation.common import nonblank_lines, require_file
from tencentpretrain.evaluation.word_vectors import nearest_words_report, word_embedding_table
from tencentpretrain.tokenizers import add_tokenizer_args, build_tokenizer, tokenizer_config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load_model_path", required=True, help="TencentPretrain checkpoint")
    parser.add_argument("--test_path", required=True, help="target words, one per line")
    parser.add_argument("--topn", type=int, default=15, help="neighbours printed per word")
    add_tokenizer_args(parser)
    return parser


def main(argv: list[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    lines = nonblank_lines(require_file(args.test_path, "--test_path"))
    tokenizer = build_tokenizer(tokenizer_config_from_args(args))
    table = word_embedding_table(load_state_dict(args.load_model_path), source=args.load_model_path)
    report = nearest_words_report(tokenizer, table, lines, topn=args.topn, source=args.test_path)
    print(report, end="")
    return report


if __name__ == "__main__":
    run(main)
