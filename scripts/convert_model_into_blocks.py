"""Split a TencentPretrain checkpoint into blocks for ZeRO-3 loading, as the original script did:
DIR/tencentpretrain_model-K.bin plus DIR/tencentpretrain_model.bin.index.json.

Like the original, tensors are written in bf16 by default (--dtype keep to leave them as they are).

    python3 scripts/convert_model_into_blocks.py --input_model_path models/llama-7b.bin \\
        --output_model_path models/llama-7b-blocks/ --block_size 10
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert import cli
from tencentpretrain.convert.rewrite import rewrite_checkpoint
from tencentpretrain.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.new_parser(__doc__)
    parser.add_argument("--input_model_path", required=True, help="TencentPretrain .bin/.safetensors or blocks dir")
    parser.add_argument("--output_model_path", required=True, help="output directory")
    parser.add_argument("--block_size", type=float, default=10.0, help="disk size (GB) of each block")
    parser.add_argument("--config_path", help="optional JSON config to check the checkpoint against")
    cli.add_dtype_arg(parser, default="bf16", help_text="dtype of the blocks (bf16 as the original; keep = as is)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty output directory whole (without it, one is refused)")

    def body(args) -> None:
        if args.output_model_path.endswith((".bin", ".safetensors")):
            raise ConfigError("--output_model_path must be a directory for blocks")
        config = cli.model_config_for(args.config_path, args.input_model_path) if args.config_path else None
        rewrite_checkpoint(args.input_model_path, args.output_model_path, dtype=cli.dtype_from_flag(args.dtype),
                           max_shard_bytes=int(args.block_size * 1e9), config=config, overwrite=args.overwrite)

    return cli.run(parser, argv, body)


if __name__ == "__main__":
    run(main)
