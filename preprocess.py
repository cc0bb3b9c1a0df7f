"""Preprocess a corpus into a dataset directory for pretrain.py (TencentPretrain-compatible flags).

    python3 preprocess.py --corpus_path corpus.txt --spm_model_path tokenizer.model \\
        --dataset_path dataset.pt --data_processor lm --seq_length 512 --processes_num 8
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tencentpretrain.cli import add_dataclass_flags, dataclass_from_args, run
from tencentpretrain.data.builder import build_dataset
from tencentpretrain.data.config import DataConfig
from tencentpretrain.tokenizers import add_tokenizer_args, tokenizer_config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(parser, DataConfig, title="data")
    add_tokenizer_args(parser)
    compatibility = parser.add_argument_group("accepted for compatibility")
    compatibility.add_argument("--docs_buffer_size", type=int, default=None,
                               help="no effect: workers read their byte range of the corpus line by line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    build_dataset(dataclass_from_args(DataConfig, args), tokenizer_config_from_args(args))
    return 0


if __name__ == "__main__":
    run(main)
