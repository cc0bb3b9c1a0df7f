"""Average the weights of several checkpoints of one model (e.g. the last saves of a run).

    python scripts/average_models.py --model_list_path models/a.bin-9000 models/a.bin-10000 \\
        --output_model_path models/a_avg.bin
"""

from __future__ import annotations

import argparse

from tencentpretrain.cli import run
from tencentpretrain.convert.average import average_checkpoints


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_list_path", nargs="+", required=True,
                        help="checkpoints to average (.bin, .safetensors or sharded directories)")
    parser.add_argument("--output_model_path", required=True, help="the averaged checkpoint (.bin or .safetensors)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    average_checkpoints(args.model_list_path, args.output_model_path)


if __name__ == "__main__":
    run(main)
