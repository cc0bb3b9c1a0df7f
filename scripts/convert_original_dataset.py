"""Import a dataset.pt written by the original TencentPretrain's preprocess.py (a pickle stream) into a dataset
directory for pretrain.py, without the corpus. Reads ``lm``/``llm_pretrain`` and ``llm_sft`` records.

    python scripts/convert_original_dataset.py --original_dataset_path dataset.pt --dataset_path dataset_zh \\
        --spm_model_path tokenizer.model --data_processor lm --seq_length 1024

Pass the tokenizer and --seq_length the file was built with (records are checked against both).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.import_original import RECORD_LAYOUTS, import_original_dataset
from tencentpretrain.tokenizers import add_tokenizer_args, tokenizer_config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original_dataset_path", required=True, help="the original's dataset.pt (a file)")
    parser.add_argument("--dataset_path", required=True, help="the dataset directory to write")
    parser.add_argument("--data_processor", default="lm", choices=sorted(RECORD_LAYOUTS),
                        help="the processor the file was built with")
    parser.add_argument("--seq_length", type=int, default=128, help="the --seq_length the file was built with")
    parser.add_argument("--train_on_prompt", action="store_true",
                        help="llm_sft: score prompt tokens too (the original did unless run with --prefix_lm_loss)")
    add_tokenizer_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = DataConfig(corpus_path=args.original_dataset_path, dataset_path=args.dataset_path,
                        data_processor=args.data_processor, seq_length=args.seq_length,
                        train_on_prompt=args.train_on_prompt)
    import_original_dataset(args.original_dataset_path, config, tokenizer_config_from_args(args))
    return 0


if __name__ == "__main__":
    run(main)
