"""Convert an HF LLaMA directory (safetensors or .bin, single or sharded; GQA; any vocabulary) to TencentPretrain.

Every size comes from the directory's config.json; a TencentPretrain JSON config is written beside the output
(x.bin -> x_config.json). Tensors are converted one shard at a time.

    python3 scripts/convert_llama_from_huggingface_to_tencentpretrain.py \\
        --input_model_path models/llama-7b-hf/ --output_model_path models/llama-7b.bin
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert import cli
from tencentpretrain.convert.hf import convert_hf_to_tencentpretrain

# --type of the original script: sizes it hard-coded, now only compared with config.json.
LEGACY_TYPES = {"7B": (32, 4096), "13B": (40, 5120), "33B": (60, 6656), "65B": (80, 8192), "70B": (80, 8192)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.new_parser(__doc__)
    parser.add_argument("--input_model_path", required=True, help="HF model directory (config.json + weights)")
    parser.add_argument("--output_model_path", required=True,
                        help="x.bin / x.safetensors, or a directory for TencentPretrain blocks + index")
    parser.add_argument("--type", choices=list(LEGACY_TYPES),
                        help="accepted for compatibility; sizes come from config.json (a mismatch is reported)")
    parser.add_argument("--config_output_path", help="where to write the JSON config (default: beside the output)")
    parser.add_argument("--block_size", type=float, default=10.0, help="GB per block for a directory output")
    cli.add_dtype_arg(parser)

    def body(args) -> None:
        config = convert_hf_to_tencentpretrain(
            args.input_model_path, args.output_model_path, dtype=cli.dtype_from_flag(args.dtype),
            max_shard_bytes=int(args.block_size * 1e9), config_path=args.config_output_path,
        )
        if args.type and LEGACY_TYPES[args.type] != (config.layers_num, config.hidden_size):
            logging.getLogger(__name__).warning(
                "--type %s ignored: config.json describes %d layers of width %d", args.type, config.layers_num,
                config.hidden_size)

    return cli.run(parser, argv, body)


if __name__ == "__main__":
    run(main)
