"""Write a checkpoint's word embeddings in word2vec text form: a "<count> <dim>" line, then one
"<token> v1 v2 ..." line per vocabulary entry.

    python scripts/extract_embeddings.py --load_model_path models/bert.bin --vocab_path models/google_zh_vocab.txt \\
        --word_embedding_path embeddings.txt
"""

from __future__ import annotations

import argparse

from tencentpretrain.atomic import atomic_path
from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.cli import run
from tencentpretrain.evaluation.word_vectors import vocabulary, word_embedding_table, word_vectors_text
from tencentpretrain.tokenizers import add_tokenizer_args, build_tokenizer, tokenizer_config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load_model_path", required=True, help="TencentPretrain checkpoint")
    parser.add_argument("--word_embedding_path", required=True, help="output text file")
    add_tokenizer_args(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    pieces = vocabulary(build_tokenizer(tokenizer_config_from_args(args)))
    table = word_embedding_table(load_state_dict(args.load_model_path), source=args.load_model_path)
    lines = word_vectors_text(table, pieces)
    with atomic_path(args.word_embedding_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)


if __name__ == "__main__":
    run(main)
