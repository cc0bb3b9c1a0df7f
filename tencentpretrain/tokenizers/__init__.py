"""Registered tokenizers: every module of this package registers its tokenizer on import.

Build one with ``build_tokenizer(TokenizerConfig(...))`` or ``build_tokenizer("sentencepiece", spm_model_path=...)``.
"""

from tencentpretrain.registry import import_submodules
from tencentpretrain.tokenizers.base import (
    Tokenizer,
    TokenizerConfig,
    add_tokenizer_args,
    build_tokenizer,
    file_sha256,
    tokenizer_config_from_args,
)

import_submodules(__name__)

__all__ = [
    "Tokenizer", "TokenizerConfig", "add_tokenizer_args", "build_tokenizer", "file_sha256",
    "tokenizer_config_from_args",
]
