"""One feature vector per sentence of --test_path: the model's final hidden states of "[CLS] sentence [SEP]",
pooled (--pooling first/last/mean/max), optionally whitened to --whitening_size dimensions; saved with torch.save
as an (N, H) tensor at --prediction_path.

    python scripts/extract_features.py --load_model_path models/bert.bin --config_path models/bert/base_config.json \\
        --vocab_path models/google_zh_vocab.txt --test_path sentences.txt --prediction_path features.pt
"""

from __future__ import annotations

import argparse
import logging

import torch

from tencentpretrain.atomic import atomic_path
from tencentpretrain.cli import run
from tencentpretrain.evaluation.common import (
    add_model_spec_args,
    load_model_and_tokenizer,
    model_spec_from_args,
    nonblank_lines,
    require_file,
)
from tencentpretrain.evaluation.word_vectors import sentence_features, sentence_ids, whiten
from tencentpretrain.layers.pooling import POOLINGS

logger = logging.getLogger("extract_features")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_spec_args(parser)
    parser.add_argument("--test_path", required=True, help="sentences, one per line")
    parser.add_argument("--prediction_path", required=True, help="output: the (N, H) tensor, torch.save format")
    parser.add_argument("--batch_size", type=int, default=64, help="sentences per forward pass")
    parser.add_argument("--seq_length", type=int, default=128, help="sentences are cut to this many tokens")
    parser.add_argument("--pooling", choices=POOLINGS, default="first", help="how hidden states become one vector")
    parser.add_argument("--whitening_size", type=int, default=None, help="output size after BERT-whitening")
    return parser


def main(argv: list[str] | None = None) -> torch.Tensor:
    args = build_parser().parse_args(argv)
    lines = nonblank_lines(require_file(args.test_path, "--test_path"))
    model, tokenizer = load_model_and_tokenizer(model_spec_from_args(args))
    rows = [sentence_ids(tokenizer, line, args.seq_length) for _, line in lines]
    rows = [r for r in rows if r]
    features = sentence_features(model, rows, pad_id=tokenizer.pad_id or 0, pooling=args.pooling,
                                 batch_size=args.batch_size)
    if args.whitening_size is not None:
        features = whiten(features, args.whitening_size)
    logger.info("feature vectors (sentences x size): %s", tuple(features.shape))
    with atomic_path(args.prediction_path) as tmp:
        torch.save(features, tmp)
    return features


if __name__ == "__main__":
    run(main)
