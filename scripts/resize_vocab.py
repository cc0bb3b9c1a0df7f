"""Resize a checkpoint's embedding and LM-head rows to an extended tokenizer (step 3; see docs/vocabulary.md).

Each new row is the mean of the rows of the base pieces that encoded the new piece's text (fallback: the mean of
all rows). Works on .bin, .safetensors and sharded directories; the original vocabulary size is recorded in a JSON
next to the output (<output>.vocab_extension.json, or vocab_extension.json inside an output directory), and the
model config beside the input (x.bin -> x_config.json) is written beside the output with the new vocab_size.

    python scripts/resize_vocab.py --input_model_path models/llama-7b.bin --output_model_path models/llama-7b-zh.bin \\
        --base_spm_model_path llama/tokenizer.model --spm_model_path merged_tokenizer.model
"""

from __future__ import annotations

import argparse

from tencentpretrain.cli import run
from tencentpretrain.vocab.resize import ResizeConfig, extension_record_path, resize_checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_model_path", required=True, help="checkpoint: .bin/.safetensors file or sharded dir")
    p.add_argument("--output_model_path", required=True, help="where to write (a file, or a dir for a dir input)")
    p.add_argument("--base_spm_model_path", required=True, help="the tokenizer the checkpoint was trained with")
    p.add_argument("--spm_model_path", required=True, help="the extended tokenizer (scripts/merge_tokenizers.py)")
    p.add_argument("--pad_to_multiple_of", type=int, default=1,
                   help="round the row count up to this multiple (the config's vocab_size follows)")
    p.add_argument("--config_path", help="model JSON config to copy beside the output with the new vocab_size "
                                          "(default: x_config.json beside x.bin, when it exists)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    record = resize_checkpoint(ResizeConfig(**vars(args)))
    print(f"{args.output_model_path}: {record['original_vocab_size']} -> {record['rows']} rows; "
          f"record in {extension_record_path(args.output_model_path)}")


if __name__ == "__main__":
    run(main)
