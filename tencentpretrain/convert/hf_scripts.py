"""The two HF entry points every ``scripts/convert_<family>_{from,to}_huggingface*.py`` wraps, for any family.

    hf_to_tencentpretrain_main("bert", argv)   # HF directory -> TencentPretrain checkpoint (+ JSON config)
    tencentpretrain_to_hf_main("bert", argv)   # TencentPretrain checkpoint -> HF directory

``model_type=None`` makes the generic scripts: the family comes from config.json (import) or ``--model_type``
(export). Every family script takes the union of the original scripts' flags (they mean the same for every
family), except LLaMA's ``--type``, which only the LLaMA and the generic scripts take.

``head="BertForSequenceClassification"`` (...) makes the converters of a fine-tuned task head (the original's
``convert_bert_text_classification_*``...): the same flags, and on import a bare HF state dict
(``pytorch_model.bin``) is accepted as well as a directory.

The original's size flags are kept: ``--layers_num`` and ``--decoder_layers_num`` (sizes it could not read from
a config) and ``--type`` (BERT: ``bert`` with the next-sentence head or ``mlm`` without; T5: ``t5`` or
``t5-v1_1``). Here the converter reads all of them from the checkpoint's config, so a value that agrees is only
noted in the log, and one that contradicts the checkpoint is an error before anything is written. A single
weight file (``pytorch_model.bin``) is accepted as input wherever its config.json lies beside it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert import cli
from tencentpretrain.errors import ConfigError

logger = logging.getLogger(__name__)

# --type of the original LLaMA script: sizes it hard-coded, now only compared with config.json.
LEGACY_LLAMA_TYPES = {"7B": (32, 4096), "13B": (40, 5120), "33B": (60, 6656), "65B": (80, 8192), "70B": (80, 8192)}
# --type of the other original family scripts: {family: {value: (what it meant, test of a config)}}.
LEGACY_TYPES: dict[str, dict[str, tuple[str, Callable[[ModelConfig], bool]]]] = {
    "bert": {
        "bert": ("a next-sentence head (BertForPreTraining, targets mlm + sp)", lambda c: "sp" in c.target),
        "mlm": ("no next-sentence head (BertForMaskedLM, target mlm)", lambda c: "sp" not in c.target),
    },
    "t5": {
        "t5": ("T5's ReLU feed-forward (feed_forward dense)", lambda c: c.feed_forward != "gated"),
        "t5-v1_1": ("T5 v1.1's gated-GELU feed-forward (feed_forward gated)", lambda c: c.feed_forward == "gated"),
    },
}


def _add_overwrite_arg(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty output directory whole (without it, one is refused)")


def _family_names() -> list[str]:
    from tencentpretrain.convert.families import registry

    return sorted(registry())


def _add_layers_num_arg(parser, what: str) -> None:
    parser.add_argument("--layers_num", type=int,
                        help=f"the original's flag; optional, checked against {what}")


def _add_legacy_size_args(parser: argparse.ArgumentParser, model_type: str | None, head: str | None,
                          what: str) -> None:
    """The original converters' --layers_num, --decoder_layers_num and --type (BERT, T5), all optional."""
    _add_layers_num_arg(parser, what if head is None else f"{what}, or the layers a bare state dict must hold")
    if head is None:
        parser.add_argument("--decoder_layers_num", type=int,
                            help=f"the original's flag (encoder-decoder models); optional, checked against {what}")
    if head is None and model_type in LEGACY_TYPES:
        meanings = "; ".join(f"{k}: {v[0]}" for k, v in LEGACY_TYPES[model_type].items())
        parser.add_argument("--type", choices=list(LEGACY_TYPES[model_type]),
                            help=f"the original's flag; optional, checked against {what} ({meanings})")


def check_legacy_flags(args: argparse.Namespace, config: ModelConfig, source: str, family: str | None) -> None:
    """Compare the original's optional size flags with ``config`` (read from ``source``): a contradiction is a
    ConfigError, an agreement a log note (the value is read from the checkpoint anyway)."""
    given = []
    layers = getattr(args, "layers_num", None)
    if layers is not None:
        if layers != config.layers_num:
            raise ConfigError(f"--layers_num {layers}, but {source} has {config.layers_num} layers; leave the flag "
                              "out (the converter reads the size from the checkpoint's config)")
        given.append(f"--layers_num {layers}")
    decoder_layers = getattr(args, "decoder_layers_num", None)
    if decoder_layers is not None:
        if config.decoder is None:
            raise ConfigError(f"--decoder_layers_num {decoder_layers}, but {source} has no decoder")
        found = config.decoder_layers_num or config.layers_num
        if decoder_layers != found:
            raise ConfigError(f"--decoder_layers_num {decoder_layers}, but {source} has {found} decoder layers")
        given.append(f"--decoder_layers_num {decoder_layers}")
    legacy_type = getattr(args, "type", None)
    if legacy_type is not None and family in LEGACY_TYPES:
        meaning, holds = LEGACY_TYPES[family][legacy_type]
        if not holds(config):
            raise ConfigError(f"--type {legacy_type} means {meaning}, but {source} does not have it (targets "
                              f"{list(config.target)}, feed_forward {config.feed_forward}); leave --type out")
        given.append(f"--type {legacy_type}")
    if given:
        logger.info("%s: agree with %s (the converter reads them from its config)", ", ".join(given), source)


def hf_to_tencentpretrain_main(model_type: str | None, argv: Sequence[str] | None = None,
                               doc: str | None = None, head: str | None = None) -> int:
    """CLI: an HF directory of ``model_type`` (None: any registered family) -> a TencentPretrain checkpoint.
    ``head``: the HF class of a fine-tuned task head (then a bare state-dict file is accepted too)."""
    from tencentpretrain.convert.hf import convert_hf_to_tencentpretrain, hf_model_config

    parser = cli.new_parser(doc)
    input_help = "HF model directory (config.json + weights), or one weight file of it (pytorch_model.bin)"
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
    _add_legacy_size_args(parser, model_type, head, "the input's config.json")
    cli.add_dtype_arg(parser)
    _add_overwrite_arg(parser)

    def body(args) -> None:
        found = hf_model_config(args.input_model_path, model_type)
        if found is not None:
            check_legacy_flags(args, found, args.input_model_path, model_type)
        config = convert_hf_to_tencentpretrain(
            args.input_model_path, args.output_model_path, dtype=cli.dtype_from_flag(args.dtype),
            max_shard_bytes=int(args.block_size * 1e9), config_path=args.config_output_path, family=model_type,
            head=head, layers_num=getattr(args, "layers_num", None), overwrite=args.overwrite,
        )
        legacy_type = getattr(args, "type", None) if model_type in ("llama", None) else None
        if config and legacy_type and LEGACY_LLAMA_TYPES[legacy_type] != (config.layers_num, config.hidden_size):
            logger.warning(
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
    _add_legacy_size_args(parser, model_type, head, "the config")
    cli.add_dtype_arg(parser)
    _add_overwrite_arg(parser)

    def body(args) -> None:
        config = cli.model_config_for(args.config_path, args.input_model_path)
        check_legacy_flags(args, config, "the config", model_type or args.model_type)
        options = HfExportOptions(
            spm_model_path=args.spm_model_path, chat_template=cli.chat_template_from_flag(args.prompt_template),
            dtype=cli.dtype_from_flag(args.dtype), max_shard_bytes=cli.size_from_flag(args.max_shard_size),
            allow_vocab_padding=args.allow_vocab_padding, family=model_type or args.model_type, head=head,
            overwrite=args.overwrite,
        )
        convert_tencentpretrain_to_hf(args.input_model_path, args.output_model_path, config, options)

    return cli.run(parser, argv, body)
