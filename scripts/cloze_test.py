"""Cloze test of an MLM model: in each sentence of --test_path one random token is replaced by [MASK], and the
model's --topn predictions for it are written to --prediction_path, with the sentence and the right answer.

    python scripts/cloze_test.py --load_model_path models/bert.bin --config_path models/bert/base_config.json \\
        --vocab_path models/google_zh_vocab.txt --test_path sentences.txt --prediction_path cloze.txt
"""

from __future__ import annotations

import argparse

from tencentpretrain.atomic import write_text
from tencentpretrain.cli import run
from tencentpretrain.errors import ConfigError
from tencentpretrain.evaluation.common import (
    add_model_spec_args,
    load_model_and_tokenizer,
    model_spec_from_args,
    nonblank_lines,
    require_file,
)
from tencentpretrain.evaluation.word_vectors import cloze_predictions, format_cloze, piece_id, sentence_ids


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_spec_args(parser)
    parser.add_argument("--test_path", required=True, help="sentences, one per line")
    parser.add_argument("--prediction_path", required=True, help="output text file")
    parser.add_argument("--batch_size", type=int, default=64, help="sentences per forward pass")
    parser.add_argument("--seq_length", type=int, default=128, help="sentences are cut to this many tokens")
    parser.add_argument("--topn", type=int, default=10, help="predictions written per sentence")
    parser.add_argument("--mask_token", default="[MASK]", help="the vocabulary's mask token")
    parser.add_argument("--seed", type=int, default=7, help="seed of the masked positions")
    return parser


def main(argv: list[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    lines = nonblank_lines(require_file(args.test_path, "--test_path"))
    model, tokenizer = load_model_and_tokenizer(model_spec_from_args(args))
    if "mlm" not in model.config.target:
        raise ConfigError(f"{args.config_path}: cloze_test needs a model with the mlm target, got "
                          f"{list(model.config.target)}")
    mask_id = piece_id(tokenizer, args.mask_token, where="--mask_token")
    rows = [sentence_ids(tokenizer, line.strip(), args.seq_length) for _, line in lines]
    results = cloze_predictions(model, [r for r in rows if r], mask_id=mask_id, pad_id=tokenizer.pad_id or 0,
                                topn=args.topn, seed=args.seed, batch_size=args.batch_size)
    text = format_cloze(tokenizer, results)
    write_text(args.prediction_path, text)
    return text


if __name__ == "__main__":
    run(main)
