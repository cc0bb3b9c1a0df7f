"""Perplexity and bits per character of a model on a text corpus (one document per line, or JSONL {"text"}).

    python scripts/evaluate_ppl.py --config_path models/llama/7b_config.json --load_model_path model.bin \
        --spm_model_path tokenizer.model --corpus_path held_out.txt --seq_length 2048 --stride 512
"""

from __future__ import annotations

import argparse

from tencentpretrain.cli import run
from tencentpretrain.evaluation.common import (
    add_model_spec_args,
    load_model_and_tokenizer,
    model_spec_from_args,
    write_json,
)
from tencentpretrain.evaluation.perplexity import PerplexityConfig, evaluate_perplexity, format_result, read_documents


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_spec_args(parser)
    group = parser.add_argument_group("corpus")
    group.add_argument("--corpus_path", required=True, help="text file: one document per line, or JSONL")
    group.add_argument("--corpus_format", default="auto", choices=["auto", "text", "jsonl"], help="auto: by suffix")
    group.add_argument("--text_key", default="text", help="JSONL field holding the document text")
    group.add_argument("--seq_length", type=int, help="tokens per window (default: the config's max_seq_length)")
    group.add_argument("--stride", type=int, help="new tokens scored per window (default: seq_length, no overlap)")
    group.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    group.add_argument("--add_bos", action=argparse.BooleanOptionalAction, default=True, help="bos before documents")
    group.add_argument("--add_eos", action=argparse.BooleanOptionalAction, default=False, help="score an eos after")
    group.add_argument("--output_path", help="write the numbers as JSON here")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    model, tokenizer = load_model_and_tokenizer(model_spec_from_args(args))
    config = PerplexityConfig(
        seq_length=args.seq_length or model.config.max_seq_length, stride=args.stride,
        batch_size=args.batch_size, add_bos=args.add_bos, add_eos=args.add_eos,
    )
    documents = read_documents(args.corpus_path, args.corpus_format, text_key=args.text_key)
    result = evaluate_perplexity(model, tokenizer, documents, config)
    print(format_result(result))
    report = {**result.to_dict(), "settings": {**vars(args)}}
    if args.output_path:
        write_json(args.output_path, report)
    return report


if __name__ == "__main__":
    run(main)
