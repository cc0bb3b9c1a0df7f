"""Side-by-side generations of one or more models on a prompts file, as a Markdown table and JSONL.

    python scripts/evaluate_generation.py --prompts_path prompts.jsonl --spm_model_path tokenizer.model \
        --config_path models/llama/7b_config.json \
        --system name=7B,load_model_path=chatllama_7b.bin \
        --system name=7B-alpaca,load_model_path=alpaca_7b.bin,template=alpaca,temperature=0.7,top_p=0.9 \
        --output_path report.md --jsonl_path report.jsonl

Flags outside --system (model files, --template, sampling) are the defaults of every system.
"""

from __future__ import annotations

import argparse

from tencentpretrain.cli import run
from tencentpretrain.evaluation.common import add_model_spec_args, model_spec_from_args, write_jsonl, write_text
from tencentpretrain.evaluation.generation_report import (
    SystemConfig,
    generate_report,
    markdown_report,
    parse_system_flag,
    read_prompts,
    read_systems_file,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_spec_args(parser)
    group = parser.add_argument_group("report")
    group.add_argument("--prompts_path", required=True, help="JSONL {prompt|instruction, input?, category?} or text")
    group.add_argument("--system", action="append", default=[], help="one column: key=value,... (repeatable)")
    group.add_argument("--systems_file", help="JSON list of system objects (same keys as --system)")
    group.add_argument("--template", default="plain", help="default chat template of the systems")
    group.add_argument("--max_new_tokens", type=int, default=256, help="default new tokens per answer")
    group.add_argument("--temperature", type=float, default=0.0, help="default temperature (0 = greedy)")
    group.add_argument("--top_k", type=int, default=0, help="default top-k (0 = off)")
    group.add_argument("--top_p", type=float, default=1.0, help="default top-p (1 = off)")
    group.add_argument("--repetition_penalty", type=float, default=1.0, help="default repetition penalty")
    group.add_argument("--seed", type=int, default=0, help="default sampling seed")
    group.add_argument("--batch_size", type=int, default=8, help="prompts generated together")
    group.add_argument("--title", default="", help="heading of the Markdown report")
    group.add_argument("--output_path", required=True, help="Markdown report")
    group.add_argument("--jsonl_path", help="JSONL: one record per prompt with every system's output")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    defaults = SystemConfig(
        name="", model=model_spec_from_args(args), template=args.template, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, seed=args.seed,
    )
    systems = [parse_system_flag(text, defaults) for text in args.system]
    systems += read_systems_file(args.systems_file, defaults) if args.systems_file else []
    systems = systems or [parse_system_flag("", defaults)]
    records = generate_report(read_prompts(args.prompts_path), systems, batch_size=args.batch_size)
    write_text(args.output_path, markdown_report(records, systems, title=args.title))
    if args.jsonl_path:
        write_jsonl(args.jsonl_path, records)
    return records


if __name__ == "__main__":
    run(main)
