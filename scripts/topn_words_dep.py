"""Context-dependent neighbours: for each "word<TAB>sentence" line of --test_path, print the --topn words of
--cand_vocab_path that, put in the word's place, give the hidden state closest (cosine) to the word's own.

    python scripts/topn_words_dep.py --load_model_path models/bert.bin --config_path models/bert/base_config.json \\
        --vocab_path models/google_zh_vocab.txt --cand_vocab_path models/google_zh_vocab.txt --test_path test.tsv
"""

from __future__ import annotations

import argparse
import logging

from tencentpretrain.cli import run
from tencentpretrain.evaluation.common import (
    add_model_spec_args,
    load_model_and_tokenizer,
    model_spec_from_args,
    nonblank_lines,
    require_file,
)
from tencentpretrain.evaluation.word_vectors import ContextualSearch, contextual_nearest_report, known_ids
from tencentpretrain.tokenizers.vocab import load_vocab

logger = logging.getLogger("topn_words_dep")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_spec_args(parser)
    parser.add_argument("--cand_vocab_path", required=True, help="candidate words, one per line")
    parser.add_argument("--test_path", required=True, help="lines 'target word<TAB>sentence containing it'")
    parser.add_argument("--batch_size", type=int, default=64, help="candidates per forward pass")
    parser.add_argument("--seq_length", type=int, default=128, help="sentences are cut to this many tokens")
    parser.add_argument("--topn", type=int, default=15, help="neighbours printed per line")
    return parser


def main(argv: list[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    lines = nonblank_lines(require_file(args.test_path, "--test_path"))
    model, tokenizer = load_model_and_tokenizer(model_spec_from_args(args))
    pieces = load_vocab(require_file(args.cand_vocab_path, "--cand_vocab_path"))
    candidates = known_ids(tokenizer, pieces)
    if len(candidates) < len(pieces):
        logger.warning("%d candidates are not in the model's vocabulary and are skipped", len(pieces) - len(candidates))
    search = ContextualSearch(topn=args.topn, seq_length=args.seq_length, batch_size=args.batch_size,
                              source=args.test_path)
    report = contextual_nearest_report(model, tokenizer, lines, candidates, search)
    print(report, end="")
    return report


if __name__ == "__main__":
    run(main)
