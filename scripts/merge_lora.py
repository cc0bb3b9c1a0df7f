"""Merge a LoRA file into its base model: W + B A * alpha / r for every adapted weight -> one plain checkpoint.

    python3 scripts/merge_lora.py --input_model_path models/llama-7b.bin \\
        --lora_model_path models/llama_zh_lora.bin-2000 --lora_alpha 16 --output_model_path models/merged.bin
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.config import read_json
from tencentpretrain.convert import cli
from tencentpretrain.convert.rewrite import merge_lora_checkpoint
from tencentpretrain.transforms.lora import LoraConfig


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.new_parser(__doc__)
    parser.add_argument("--input_model_path", "--pretrained_model_path", dest="input_model_path", required=True,
                        help="base TencentPretrain checkpoint")
    parser.add_argument("--lora_model_path", "--lora_pretrained_model_path", dest="lora_model_path", required=True,
                        help="LoRA file (only *.lora_A / *.lora_B tensors)")
    parser.add_argument("--output_model_path", required=True, help="x.bin / x.safetensors, or a blocks directory")
    parser.add_argument("--config_path", help="JSON config: checks the base model, and its lora_params give alpha")
    parser.add_argument("--lora_alpha", type=float, help=f"LoRA alpha (default: lora_params of --config_path, "
                        f"else {LoraConfig.alpha:g}); the rank comes from the file")
    cli.add_dtype_arg(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty output directory whole (without it, one is refused)")

    def body(args) -> None:
        config = cli.model_config_for(args.config_path, args.input_model_path) if args.config_path else None
        alpha = args.lora_alpha
        if alpha is None:
            lora_params = read_json(args.config_path).get("lora_params", {}) if args.config_path else {}
            alpha = float(lora_params.get("lora_alpha", LoraConfig.alpha))
        merge_lora_checkpoint(args.input_model_path, args.lora_model_path, args.output_model_path, alpha=alpha,
                              dtype=cli.dtype_from_flag(args.dtype), config=config,
                              overwrite=args.overwrite)

    return cli.run(parser, argv, body)


if __name__ == "__main__":
    run(main)
