"""Re-index a checkpoint to another vocabulary file: each token keeps its embedding and output rows under its new
id, tokens the old vocabulary lacks get new N(0, 0.02) rows (zero biases). Other weights are unchanged.

    python scripts/dynamic_vocab_adapter.py --old_model_path models/bert.bin \\
        --old_vocab_path models/google_zh_vocab.txt --new_vocab_path new_vocab.txt --new_model_path models/bert_new.bin
"""

from __future__ import annotations

import argparse

from tencentpretrain.cli import run
from tencentpretrain.vocab.adapt import adapt_checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old_model_path", required=True, help="checkpoint trained with --old_vocab_path")
    parser.add_argument("--old_vocab_path", required=True, help="vocabulary file the checkpoint was trained with")
    parser.add_argument("--new_vocab_path", required=True, help="vocabulary file to re-index to")
    parser.add_argument("--new_model_path", required=True, help="the re-indexed checkpoint (.bin or .safetensors)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the rows drawn for new tokens")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    mapping = adapt_checkpoint(args.old_model_path, args.old_vocab_path, args.new_vocab_path, args.new_model_path,
                               seed=args.seed)
    print(f"{args.new_model_path}: {mapping.kept} of {len(mapping.old_ids)} tokens kept their rows")


if __name__ == "__main__":
    run(main)
