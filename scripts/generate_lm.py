"""TencentPretrain's generate_lm.py: continue each line of --test_path (stripped) with the language model.

The output holds, per line, the line, a newline and the prompt + completion. --seq_length is the total length
(prompt + generated tokens), as in the original; sampling defaults are the original's (top_k 70, temperature 1).

    python scripts/generate_lm.py --load_model_path model.bin --config_path models/llama/7b_config.json \
        --spm_model_path tokenizer.model --test_path beginning.txt --prediction_path generated.txt --seq_length 128
"""

from __future__ import annotations

import argparse
import logging

from tencentpretrain.generation.batch_file import generate_file, read_prompts, write_generate_lm
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
    parser.set_defaults(top_k=70, top_p=1.0, temperature=1.0, repetition_penalty=1.0)
    args = parse_inference_args(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tokenizer = load_tokenizer(model_config_from_inference_args(args))
    model = load_for_inference(args, tokenizer.vocab_size)
    prompts = read_prompts(args.test_path, keep_newline=False)
    completions = generate_file(model, tokenizer, prompts, generation_from_args(args),
                                batch_size=args.batch_size, seq_length=args.seq_length)
    write_generate_lm(args.prediction_path, prompts, completions)


if __name__ == "__main__":
    main()
