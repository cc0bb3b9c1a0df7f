"""Multi-turn chat in the terminal, streamed. Commands: ``clear`` (new conversation), ``exit``.

    python inference/llama_dialogue.py --load_model_path model.bin --config_path models/llama/7b_config.json \
        --spm_model_path tokenizer.model --seq_length 2048 --prompt_template user_bot
"""

from __future__ import annotations

import argparse

from tencentpretrain.cli import run
from tencentpretrain.generation.engine import Engine
from tencentpretrain.generation.options import (
    add_inference_args,
    generation_from_args,
    load_tokenizer_and_model,
    parse_inference_args,
)
from tencentpretrain.generation.repl import Dialogue, DialogueConfig, run_repl
from tencentpretrain.tokenizers.templates import get_template


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep_length_ratio", type=float, default=0.5, help="share of --seq_length for history")
    parser.add_argument("--prediction_path", help="accepted for compatibility; unused")
    add_inference_args(parser, seq_length=2048, batch_size=1)
    args = parse_inference_args(parser, argv)
    model, tokenizer = load_tokenizer_and_model(args)
    engine = Engine(model, tokenizer, max_batch_size=1, max_length=args.seq_length)
    config = DialogueConfig(seq_length=args.seq_length, keep_length_ratio=args.keep_length_ratio)
    run_repl(Dialogue(engine, tokenizer, get_template(args.prompt_template), generation_from_args(args), config))


if __name__ == "__main__":
    run(main, log_level="WARNING")
