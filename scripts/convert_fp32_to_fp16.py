"""Cast a TencentPretrain checkpoint's floating tensors to fp16 (or --dtype bf16), keeping the key names.

    python3 scripts/convert_fp32_to_fp16.py --input_model_path models/chatllama_7b.bin \\
        --output_model_path models/chatllama_7b_fp16.bin [--dtype bf16] [--config_path models/llama/7b_config.json]
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert import cli
from tencentpretrain.convert.rewrite import rewrite_checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.new_parser(__doc__)
    parser.add_argument("--input_model_path", "--load_model_path", dest="input_model_path", required=True,
                        help="TencentPretrain .bin/.safetensors or blocks dir")
    parser.add_argument("--output_model_path", required=True, help="x.bin / x.safetensors, or a blocks directory")
    parser.add_argument("--config_path", help="optional JSON config to check the checkpoint against")
    parser.add_argument("--dtype", choices=["fp16", "bf16", "float16", "bfloat16"], default="fp16", help="target dtype")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty output directory whole (without it, one is refused)")

    def body(args) -> None:
        config = cli.model_config_for(args.config_path, args.input_model_path) if args.config_path else None
        rewrite_checkpoint(args.input_model_path, args.output_model_path, dtype=cli.dtype_from_flag(args.dtype),
                           config=config, overwrite=args.overwrite)

    return cli.run(parser, argv, body)


if __name__ == "__main__":
    run(main)
