"""Multiple-choice accuracy on data in the C-Eval / CMMLU layout, zero-shot or k-shot.

    python scripts/evaluate_choice.py --config_path models/llama/7b_config.json --load_model_path model.bin \
        --spm_model_path tokenizer.model --data_dir ceval-exam --split val --shots 5 --output_path ceval.json
"""

from __future__ import annotations

import argparse

from tencentpretrain.cli import run
from tencentpretrain.evaluation.common import add_model_spec_args, load_model_and_tokenizer, model_spec_from_args
from tencentpretrain.evaluation.multiple_choice import (
    BENCHMARKS,
    REDUCTIONS,
    ChoiceConfig,
    evaluate_choice,
    format_table,
    load_benchmark,
    write_choice_outputs,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_spec_args(parser)
    group = parser.add_argument_group("questions")
    group.add_argument("--data_dir", required=True, help="directory in the C-Eval or CMMLU layout")
    group.add_argument("--split", default="val", help="split to score: val / test (C-Eval), test / dev (CMMLU)")
    group.add_argument("--benchmark", default="auto", choices=["auto", *BENCHMARKS], help="layout and subject names")
    group.add_argument("--subjects", nargs="+", help="only these subjects (file names without suffix)")
    group.add_argument("--shots", type=int, default=0, help="answered dev examples before each question")
    group.add_argument("--batch_size", type=int, default=8, help="prompts per forward pass")
    group.add_argument("--max_length", type=int, help="prompt tokens at most (default: max_seq_length)")
    group.add_argument("--reduce", default="max", choices=REDUCTIONS, help="how a letter's tokenizations combine")
    group.add_argument("--template", help="wrap prompts in this chat template (instruction-tuned models)")
    group.add_argument("--header", help="prompt's first line(s), with {subject}; default: the benchmark's")
    group.add_argument("--add_bos", action=argparse.BooleanOptionalAction, default=True, help="bos before prompts")
    group.add_argument("--output_path", help="JSON report (accuracy per subject, category and overall)")
    group.add_argument("--predictions_path", help="JSONL: one record per question (scores, prediction)")
    group.add_argument("--submission_path", help="JSON {subject: {id: letter}} (C-Eval's test submission layout)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    benchmark, subjects = load_benchmark(args.data_dir, args.split, args.benchmark, only=args.subjects)
    model, tokenizer = load_model_and_tokenizer(model_spec_from_args(args))
    config = ChoiceConfig(
        shots=args.shots, batch_size=args.batch_size, max_length=args.max_length, reduce=args.reduce,
        header=args.header, template=args.template, add_bos=args.add_bos,
    )
    report, records = evaluate_choice(model, tokenizer, subjects, config, benchmark=benchmark)
    report["settings"].update(data_dir=args.data_dir, split=args.split, load_model_path=args.load_model_path)
    print(format_table(report))
    write_choice_outputs(report, records, args.output_path, args.predictions_path, args.submission_path)
    return report


if __name__ == "__main__":
    run(main)
