"""Convert a TencentPretrain LLaMA checkpoint to an HF directory that transformers loads with from_pretrained.

Writes config.json (true vocab_size, KV heads, rope_theta, rms_norm_eps, max_position_embeddings), safetensors
shards + index, generation_config.json and, with --spm_model_path, tokenizer.model, tokenizer.json,
tokenizer_config.json (bos/eos and the chat template) and special_tokens_map.json.

    python3 scripts/convert_llama_from_tencentpretrain_to_huggingface.py \\
        --input_model_path models/llama_zh_7b.bin --config_path models/llama/7b_config.json \\
        --spm_model_path models/tokenizer.model --output_model_path models/llama_zh_7b_hf/
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert import cli
from tencentpretrain.convert.hf import HfExportOptions, convert_tencentpretrain_to_hf


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.new_parser(__doc__)
    parser.add_argument("--input_model_path", required=True, help="TencentPretrain .bin/.safetensors or blocks dir")
    parser.add_argument("--output_model_path", required=True, help="HF output directory")
    parser.add_argument("--config_path", help="TencentPretrain JSON config (default: the one beside the input)")
    parser.add_argument("--spm_model_path", help="the SentencePiece tokenizer.model the model was trained with")
    parser.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard, e.g. 5GB or 500MB")
    parser.add_argument("--allow_vocab_padding", action="store_true",
                        help="accept an embedding with more rows than the tokenizer has pieces")
    cli.add_template_arg(parser)
    cli.add_dtype_arg(parser)

    def body(args) -> None:
        options = HfExportOptions(
            spm_model_path=args.spm_model_path, chat_template=cli.chat_template_from_flag(args.prompt_template),
            dtype=cli.dtype_from_flag(args.dtype), max_shard_bytes=cli.size_from_flag(args.max_shard_size),
            allow_vocab_padding=args.allow_vocab_padding,
        )
        config = cli.model_config_for(args.config_path, args.input_model_path)
        convert_tencentpretrain_to_hf(args.input_model_path, args.output_model_path, config, options)

    return cli.run(parser, argv, body)


if __name__ == "__main__":
    run(main)
