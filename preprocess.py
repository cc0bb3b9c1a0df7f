"""Preprocess a corpus into a dataset directory for pretrain.py (TencentPretrain-compatible flags).

    python3 preprocess.py --corpus_path corpus.txt --spm_model_path tokenizer.model \\
        --dataset_path dataset.pt --data_processor lm --seq_length 512 --processes_num 8
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tencentpretrain.data.builder import build_dataset
from tencentpretrain.data.config import DataConfig, add_dataclass_args, dataclass_from_args
from tencentpretrain.errors import TencentPretrainError
from tencentpretrain.tokenizers import add_tokenizer_args, tokenizer_config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser.add_argument_group("data"), DataConfig)
    add_tokenizer_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        build_dataset(dataclass_from_args(DataConfig, args), tokenizer_config_from_args(args))
    except TencentPretrainError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
