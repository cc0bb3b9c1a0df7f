"""Convert a TencentPretrain LLaMA checkpoint to Meta's format: consolidated.NN.pth + params.json.

    python3 scripts/convert_tencentpretrain_to_llama.py --input_model_path models/llama_zh_7b.bin \\
        --config_path models/llama/7b_config.json --output_model_path models/llama_zh_7b_meta/ \\
        [--model_parallel_size 2] [--spm_model_path tokenizer.model]
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert import cli
from tencentpretrain.convert.meta import convert_tencentpretrain_to_meta


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.new_parser(__doc__)
    parser.add_argument("--input_model_path", required=True, help="TencentPretrain .bin/.safetensors or blocks dir")
    parser.add_argument("--output_model_path", required=True, help="output directory")
    parser.add_argument("--config_path", help="TencentPretrain JSON config (default: the one beside the input)")
    parser.add_argument("--model_parallel_size", type=int, default=1,
                        help="number of consolidated.NN.pth shards, split as Meta's model-parallel code expects")
    parser.add_argument("--spm_model_path", help="tokenizer.model to check the vocabulary against and copy")
    cli.add_dtype_arg(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty output directory whole (without it, one is refused)")

    def body(args) -> None:
        config = cli.model_config_for(args.config_path, args.input_model_path)
        convert_tencentpretrain_to_meta(args.input_model_path, args.output_model_path, config,
                                        model_parallel_size=args.model_parallel_size,
                                        dtype=cli.dtype_from_flag(args.dtype), spm_model_path=args.spm_model_path,
                                        overwrite=args.overwrite)

    return cli.run(parser, argv, body)


if __name__ == "__main__":
    run(main)
