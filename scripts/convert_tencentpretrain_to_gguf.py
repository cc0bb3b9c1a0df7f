"""Export a TencentPretrain LLaMA (arch=llama) or Qwen2 (arch=qwen2: a config with qkv_bias) checkpoint to GGUF for
llama.cpp (f32, f16, q8_0 or q4_0), with the tokenizer's pieces, scores, types and special ids and the chat template
in the metadata.

    python3 scripts/convert_tencentpretrain_to_gguf.py --input_model_path models/chatllama_7b.bin \\
        --config_path models/llama/7b_config.json --spm_model_path models/tokenizer.model \\
        --output_model_path models/chatllama-7b-q4_0.gguf --outtype q4_0
    ./llama-cli -m models/chatllama-7b-q4_0.gguf -p "北京有什么好玩的地方？" -n 256
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert import cli
from tencentpretrain.convert.llama_gguf import OUTTYPES, GgufOptions, convert_tencentpretrain_to_gguf


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.new_parser(__doc__)
    parser.add_argument("--input_model_path", required=True, help="TencentPretrain .bin/.safetensors or blocks dir")
    parser.add_argument("--output_model_path", required=True, help="output .gguf file")
    parser.add_argument("--config_path", help="TencentPretrain JSON config (default: the one beside the input)")
    parser.add_argument("--spm_model_path", required=True, help="the SentencePiece tokenizer.model of the model")
    parser.add_argument("--outtype", choices=OUTTYPES, default="f16", help="tensor type of the 2-D weights")
    parser.add_argument("--name", help="general.name in the metadata (default: the output file name)")
    parser.add_argument("--allow_vocab_padding", action="store_true",
                        help="accept an embedding with more rows than the tokenizer (extra rows become [PADi])")
    cli.add_template_arg(parser)

    def body(args) -> None:
        config = cli.model_config_for(args.config_path, args.input_model_path)
        options = GgufOptions(outtype=args.outtype, name=args.name,
                              chat_template=cli.chat_template_from_flag(args.prompt_template),
                              allow_vocab_padding=args.allow_vocab_padding)
        convert_tencentpretrain_to_gguf(args.input_model_path, args.output_model_path, config,
                                        args.spm_model_path, options)

    return cli.run(parser, argv, body)


if __name__ == "__main__":
    run(main)
