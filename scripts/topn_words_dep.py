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
)
from tencentpretrain.evaluation.word_vectors import contextual_nearest_words, piece_id
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
    model, tokenizer = load_model_and_tokenizer(model_spec_from_args(args))
    pieces = load_vocab(args.cand_vocab_path)
    candidates = [tokenizer.piece_to_id(p) for p in pieces if tokenizer.id_to_piece(tokenizer.piece_to_id(p)) == p]
    if len(candidates) < len(pieces):
        logger.warning("%d candidates are not in the model's vocabulary and are skipped", len(pieces) - len(candidates))
    report = []
    for number, line in nonblank_lines(args.test_path):
        fields = line.split("\t")
        if len(fields) != 2:
            logger.warning("%s:%d: not 'word<TAB>sentence', skipped", args.test_path, number)
            continue
        word, context = fields
        report.append(f"Original sentence: {context}\nTarget word: {word}\n")
        ids = tokenizer.encode(context)[: args.seq_length]
        word_id = piece_id(tokenizer, word, where=f"{args.test_path}:{number}")
        if word_id not in ids:
            report.append("The target word is not in the sentence.\n")
            continue
        found = contextual_nearest_words(model, ids, ids.index(word_id), candidates, topn=args.topn,
                                         batch_size=args.batch_size)
        report += [f"{tokenizer.id_to_piece(i)}\t{sim}\n" for i, sim in found]
    print("".join(report), end="")
    return "".join(report)


if __name__ == "__main__":
    run(main)
