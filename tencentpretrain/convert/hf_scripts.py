"""The two HF entry points every ``scripts/convert_<family>_{from,to}_huggingface*.py`` wraps, for any family.

    hf_to_tencentpretrain_main("bert", argv)   # HF directory -> TencentPretrain checkpoint (+ JSON config)
    tencentpretrain_to_hf_main("bert", argv)   # TencentPretrain checkpoint -> HF directory

``model_type=None`` makes the generic scripts: the family comes from config.json (import) or ``--model_type``
(export). Every family script takes the union of the original scripts' flags (they mean the same for every
family), except LLaMA's ``--type``, which only the LLaMA and the generic scripts take.

``head="BertForSequenceClassification"`` (...) makes the converters of a fine-tuned task head (the original's
``convert_bert_text_classification_*``...): the same flags, plus the original's ``--layers_num``, and on import
a bare HF state dict (``pytorch_model.bin``) is accepted as well as a directory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tencentpretrain.convert import cli
from tencentpretrain.errors import ConfigError

# --type of the original LLaMA script: sizes it hard-coded, now only compared with config.json.
LEGACY_LLAMA_TYPES = {"7B": (32, 4096), "13B": (40, 5120), "33B": (60, 6656), "65B": (80, 8192), "70B": (80, 8192)}


def _add_overwrite_arg(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty output directory whole (without it, one is refused)")


def _family_names() -> list[str]:
    from tencentpretrain.convert.families import registry

    return sorted(registry())


def _add_layers_num_arg(parser, what: str) -> None:
    parser.add_argument("--layers_num", type=int,
                        help=f"the original's flag; optional, checked against the layers {what}")


def hf_to_tencentpretrain_main(model_type: str | None, argv: Sequence[str] | None = None,
                               doc: str | None = None, head: str | None = None) -> int:
    """CLI: an HF directory of ``model_type`` (None: any registered family) -> a TencentPretrain checkpoint.
    ``head``: the HF class of a fine-tuned task head (then a bare state-dict file is accepted too)."""
    from tencentpretrain.convert.hf import convert_hf_to_tencentpretrain

    parser = cli.new_parser(doc)
    input_help = "HF model directory (config.json + weights)"
    if head is not None:
        input_help += ", or a bare state dict (pytorch_model.bin: then no JSON config is written)"
    parser.add_argument("--input_model_path", required=True, help=input_help)
    parser.add_argument("--output_model_path", required=True,
                        help="x.bin / x.safetensors, or a directory for TencentPretrain blocks + index")
    parser.add_argument("--config_output_path", "--output_config_path", dest="config_output_path",
                        help="where to write the TencentPretrain JSON config (default: beside the output)")
    parser.add_argument("--block_size", type=float, default=10.0, help="GB per block for a directory output")
    if model_type in ("llama", None):  # the original LLaMA script's flag; no other family had one
        parser.add_argument("--type", choices=list(LEGACY_LLAMA_TYPES),
                            help="LLaMA only, accepted for compatibility; sizes come from config.json")
    if head is not None:
        _add_layers_num_arg(parser, "found in the input (a bare state dict: the layers it must hold)")
    cli.add_dtype_arg(parser)
    _add_overwrite_arg(parser)

    def body(args) -> None:
        config = convert_hf_to_tencentpretrain(
            args.input_model_path, args.output_model_path, dtype=cli.dtype_from_flag(args.dtype),
            max_shard_bytes=int(args.block_size * 1e9), config_path=args.config_output_path, family=model_type,
            head=head, layers_num=getattr(args, "layers_num", None), overwrite=args.overwrite,
        )
        legacy_type = getattr(args, "type", None)
        if config and legacy_type and LEGACY_LLAMA_TYPES[legacy_type] != (config.layers_num, config.hidden_size):
            logging.getLogger(__name__).warning(
                "--type %s ignored: config.json describes %d layers of width %d", args.type, config.layers_num,
                config.hidden_size)

    return cli.run(parser, argv, body)


def tencentpretrain_to_hf_main(model_type: str | None, argv: Sequence[str] | None = None,
                               doc: str | None = None, head: str | None = None) -> int:
    """CLI: a TencentPretrain checkpoint -> an HF directory of ``model_type`` (None: ``--model_type``).
    ``head``: the HF class of a fine-tuned task head to write."""
    from tencentpretrain.convert.hf import HfExportOptions, convert_tencentpretrain_to_hf

    parser = cli.new_parser(doc)
    if model_type is None:
        parser.add_argument("--model_type", required=True, choices=_family_names(), help="the HF family to write")
    parser.add_argument("--input_model_path", required=True, help="TencentPretrain .bin/.safetensors or blocks dir")
    parser.add_argument("--output_model_path", required=True, help="HF output directory")
    parser.add_argument("--config_path", help="TencentPretrain JSON config (default: the one beside the input)")
    parser.add_argument("--spm_model_path", help="the SentencePiece tokenizer.model the model was trained with")
    parser.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard, e.g. 5GB or 500MB")
    parser.add_argument("--allow_vocab_padding", action="store_true",
                        help="accept an embedding with more rows than the tokenizer has pieces")
    cli.add_template_arg(parser)
    if head is not None:
        _add_layers_num_arg(parser, "of the config")
    cli.add_dtype_arg(parser)
    _add_overwrite_arg(parser)

    def body(args) -> None:
        config = cli.model_config_for(args.config_path, args.input_model_path)
        if getattr(args, "layers_num", None) not in (None, config.layers_num):
            raise ConfigError(f"--layers_num {args.layers_num}, but the config has {config.layers_num} layers")
        options = HfExportOptions(
            spm_model_path=args.spm_model_path, chat_template=cli.chat_template_from_flag(args.prompt_template),
            dtype=cli.dtype_from_flag(args.dtype), max_shard_bytes=cli.size_from_flag(args.max_shard_size),
            allow_vocab_padding=args.allow_vocab_padding, family=model_type or args.model_type, head=head,
            overwrite=args.overwrite,
        )
        convert_tencentpretrain_to_hf(args.input_model_path, args.output_model_path, config, options)

    return cli.run(parser, argv, body)
