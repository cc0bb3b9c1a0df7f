"""Flag helpers shared by the ``scripts/convert_*.py`` entry points (which stay thin: flags in, one call out)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch

from tencentpretrain.checkpoint import resolve_config_path
from tencentpretrain.config import ModelConfig, load_model_config
from tencentpretrain.convert.stream import parse_size
from tencentpretrain.dtypes import KEEP, dtype_choices, parse_dtype

NO_TEMPLATE = "none"
DEFAULT_CHAT_TEMPLATE = "user_bot"  # the chat processor's default: what a ChatLLaMA-style model was tuned on


def new_parser(doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_dtype_arg(parser: argparse.ArgumentParser, default: str = "keep", help_text: str | None = None) -> None:
    parser.add_argument("--dtype", choices=dtype_choices(KEEP), default=default,
                        help=help_text or "dtype of the floating tensors written (keep = as in the input)")


def add_template_arg(parser: argparse.ArgumentParser) -> None:
    from tencentpretrain.tokenizers.templates import template_names

    parser.add_argument(
        "--prompt_template", choices=[*template_names(), NO_TEMPLATE], default=DEFAULT_CHAT_TEMPLATE,
        help="chat template (tencentpretrain.tokenizers.templates) written with the tokenizer; use the one the model "
             f"was fine-tuned with, '{NO_TEMPLATE}' for a base model",
    )


def chat_template_from_flag(name: str) -> str | None:
    """The Jinja chat template of a ``--prompt_template`` value (None for ``none``)."""
    if name == NO_TEMPLATE:
        return None
    from tencentpretrain.tokenizers.templates import get_template

    return get_template(name).chat_template


def dtype_from_flag(name: str) -> torch.dtype | None:
    return parse_dtype(name)


def size_from_flag(text: str) -> int:
    return parse_size(text)


def model_config_for(config_path: str | None, model_path: str) -> ModelConfig:
    """The ModelConfig at ``config_path``, or the one a converter wrote beside ``model_path``."""
    return load_model_config(resolve_config_path(config_path, model_path))


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None, body: Callable[[argparse.Namespace], None]) -> int:
    """Parse ``argv`` and run ``body`` (a script's ``main``; the script ends with ``tencentpretrain.cli.run(main)``,
    which sets up logging and turns a user error into one line and exit status 2)."""
    body(parser.parse_args(argv))
    return 0
