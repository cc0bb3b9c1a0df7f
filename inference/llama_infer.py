"""Batch-file inference: every line of --test_path is a prompt; prompt + completion go to --prediction_path.

Lines are used as they are (with their newline), as llama_inference did; with --prompt_template each line is a
user message in that chat template, as instruction tuning rendered it.

    python inference/llama_infer.py --load_model_path model.bin --config_path models/llama/7b_config.json \
        --spm_model_path tokenizer.model --test_path prompts.txt --prediction_path out.txt --batch_size 8
"""

from __future__ import annotations

import argparse
import logging

from tencentpretrain.data.templates import get_template
from tencentpretrain.generation.batch_file import generate_file, read_prompts, write_llama_infer
from tencentpretrain.generation.options import (
    add_inference_args,
    generation_from_args,
    load_for_inference,
    load_tokenizer,
    model_config_from_inference_args,
    parse_inference_args,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test_path", required=True, help="prompts, one per line")
    parser.add_argument("--prediction_path", required=True, help="output file")
    add_inference_args(parser, seq_length=128, batch_size=1)
    parser.set_defaults(prompt_template=None)  # lines are raw prompts unless a template is named
    args = parse_inference_args(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tokenizer = load_tokenizer(model_config_from_inference_args(args))
    model = load_for_inference(args, tokenizer.vocab_size)
    prompts = read_prompts(args.test_path, keep_newline=True)
    template = get_template(args.prompt_template) if args.prompt_template else None
    completions = generate_file(model, tokenizer, prompts, generation_from_args(args),
                                batch_size=args.batch_size, seq_length=args.seq_length, template=template)
    write_llama_infer(args.prediction_path, prompts, completions)


if __name__ == "__main__":
    main()
