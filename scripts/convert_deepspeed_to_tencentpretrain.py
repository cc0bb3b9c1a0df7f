"""Collect a DeepSpeed checkpoint directory (ZeRO-1/2/3, any number of ranks) into one TencentPretrain file.

Uses DeepSpeed's zero_to_fp32 utilities (pip install deepspeed); the tag defaults to DIR/latest.

    python3 scripts/convert_deepspeed_to_tencentpretrain.py --input_model_path models/llama_zh_7b/ \\
        --output_model_path models/llama_zh_7b.bin [--tag 300000] [--config_path models/llama/7b_config.json]
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert import cli
from tencentpretrain.convert.deepspeed_checkpoint import convert_deepspeed_to_tencentpretrain


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.new_parser(__doc__)
    parser.add_argument("--input_model_path", required=True, help="DeepSpeed checkpoint directory (with 'latest')")
    parser.add_argument("--output_model_path", required=True, help="x.bin / x.safetensors, or a blocks directory")
    parser.add_argument("--tag", help="checkpoint tag (sub-directory); default: the one named in 'latest'")
    parser.add_argument("--config_path", help="optional JSON config to check keys and shapes against")
    parser.add_argument("--exclude_frozen_parameters", action="store_true", help="leave out frozen parameters")
    cli.add_dtype_arg(parser, help_text="dtype written (keep = fp32, as ZeRO stores the master weights)")

    def body(args) -> None:
        config = cli.model_config_for(args.config_path, args.input_model_path) if args.config_path else None
        convert_deepspeed_to_tencentpretrain(args.input_model_path, args.output_model_path, tag=args.tag,
                                             dtype=cli.dtype_from_flag(args.dtype), config=config,
                                             exclude_frozen_parameters=args.exclude_frozen_parameters)

    return cli.run(parser, argv, body)


if __name__ == "__main__":
    run(main)
