"""Convert a Meta LLaMA checkpoint (consolidated.NN.pth + params.json; multi-shard 13B/33B/65B/70B merged)
to TencentPretrain. A JSON config is written beside the output (x.bin -> x_config.json).

    python3 scripts/convert_llama_to_tencentpretrain.py --input_model_path LLaMA/13B/ \\
        --output_model_path models/llama-13b.bin
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert import cli
from tencentpretrain.convert.meta import convert_meta_to_tencentpretrain
from tencentpretrain.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.new_parser(__doc__)
    parser.add_argument("--input_model_path", required=True,
                        help="Meta checkpoint directory, or its consolidated.00.pth (params.json beside it)")
    parser.add_argument("--output_model_path", required=True,
                        help="x.bin / x.safetensors, or a directory for TencentPretrain blocks + index")
    parser.add_argument("--layers_num", type=int,
                        help="accepted for compatibility; checked against params.json (n_layers)")
    parser.add_argument("--config_output_path", help="where to write the JSON config (default: beside the output)")
    cli.add_dtype_arg(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty output directory whole (without it, one is refused)")

    def body(args) -> None:
        config = convert_meta_to_tencentpretrain(args.input_model_path, args.output_model_path,
                                                 dtype=cli.dtype_from_flag(args.dtype),
                                                 config_path=args.config_output_path, overwrite=args.overwrite)
        if args.layers_num is not None and args.layers_num != config.layers_num:
            raise ConfigError(f"--layers_num {args.layers_num} but params.json says n_layers={config.layers_num}; "
                              "all layers were converted, drop --layers_num")

    return cli.run(parser, argv, body)


if __name__ == "__main__":
    run(main)
