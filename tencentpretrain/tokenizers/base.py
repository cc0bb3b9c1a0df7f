"""The tokenizer interface every component relies on, its config, and ``build_tokenizer``.

Contract (used by preprocessing, training, generation and serving):

* ``encode(text) -> list[int]`` adds no special tokens; ``decode(ids) -> str`` drops them.
* ``vocab_size`` and the special ids ``bos_id``, ``eos_id``, ``pad_id``, ``unk_id`` (an int, or None when the
  vocabulary has no such token).
* ``id_to_piece(i)`` / ``piece_to_id(piece)`` (an unknown piece maps to ``unk_id``).
* ``files``: the files that define the tokenizer, hashed into a dataset's manifest.
"""

from __future__ import annotations

import hashlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from tencentpretrain.errors import TokenizerError
from tencentpretrain.registry import TOKENIZERS

logger = logging.getLogger(__name__)


class Tokenizer(ABC):
    """Text <-> token ids. Subclasses set the special ids in ``__init__``."""

    name: ClassVar[str] = ""
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    unk_id: int | None = None

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> Tokenizer:
        """Build the tokenizer from the files a TokenizerConfig names."""
        raise NotImplementedError(f"{cls.__name__} does not implement from_config")

    @property
    def adds_dummy_prefix(self) -> bool:
        """Whether ``encode`` puts a word-boundary marker before the text (SentencePiece's "▁"), which then
        stands for one space before it; see ``templates.encode_segments``."""
        return False

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (the embedding table needs this many rows)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, with no special tokens added."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens (bos/eos/pad) are dropped."""

    @abstractmethod
    def id_to_piece(self, token_id: int) -> str:
        """The vocabulary entry of ``token_id``."""

    @abstractmethod
    def piece_to_id(self, piece: str) -> int:
        """The id of ``piece``; an unknown piece gives ``unk_id``."""

    @property
    def files(self) -> tuple[str, ...]:
        """Files that define this tokenizer (model or vocabulary)."""
        return ()

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` as a 1-D integer numpy array (faster for bulk preprocessing)."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` of each text; subclasses may do it faster."""
        return [self.encode(t) for t in texts]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: name, vocab size, special ids and the sha256 of each defining file."""
        return {
            "name": self.name,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "unk_id": self.unk_id,
            "files": [{"path": os.path.basename(f), "sha256": file_sha256(f)} for f in self.files],
        }


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """Which tokenizer to build. Field names are the original's command-line flags."""

    tokenizer: str | None = None  # registered name; None = "sentencepiece" with spm_model_path, else "bert"
    spm_model_path: str | None = None  # SentencePiece .model (LLaMA's tokenizer.model)
    vocab_path: str | None = None  # one token per line (BERT wordpiece, char, space); bpe: vocab.json too;
    # hfpretrained: the directory of a saved HF tokenizer
    merges_path: str | None = None  # bpe: GPT-2's merges.txt
    do_lower_case: bool = True  # BERT basic tokenizer: lower-case and strip accents

    @property
    def name(self) -> str:
        """The registered tokenizer this config builds.

        The original's default ``--tokenizer bert`` meant "SentencePiece pieces" whenever ``--spm_model_path``
        was given (that is how LLaMA data was made), so ``bert`` + a .model file builds ``sentencepiece``.
        """
        if self.tokenizer in (None, "bert") and self.spm_model_path:
            return "sentencepiece"
        return self.tokenizer or "bert"


def build_tokenizer(config: TokenizerConfig | str | None = None, /, **kwargs: Any) -> Tokenizer:
    """Build a registered tokenizer.

    Either ``build_tokenizer(TokenizerConfig(...))`` or ``build_tokenizer("sentencepiece", spm_model_path=...)``
    (keyword arguments are TokenizerConfig fields).
    """
    if not isinstance(config, TokenizerConfig):
        config = TokenizerConfig(tokenizer=config, **kwargs)
    elif kwargs:
        raise TypeError("pass either a TokenizerConfig or keyword arguments, not both")
    factory = TOKENIZERS.get(config.name)
    return factory.from_config(config)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_file(path: str | None, flag: str, what: str) -> str:
    """Return ``path`` if it names an existing file, else raise a TokenizerError that names ``flag``."""
    if not path:
        raise TokenizerError(f"{what} is required: pass {flag}")
    if not os.path.isfile(path):
        raise TokenizerError(f"{path}: {what} not found (given by {flag})")
    return path


def add_tokenizer_args(parser: Any) -> None:
    """Add the original's tokenizer flags: --tokenizer, --spm_model_path, --vocab_path, --merges_path,
    --do_lower_case."""
    group = parser.add_argument_group("tokenizer")
    group.add_argument(
        "--tokenizer", choices=TOKENIZERS.names(), default=None,
        help="tokenizer (default: sentencepiece when --spm_model_path is given, else bert)",
    )
    group.add_argument("--spm_model_path", default=None, help="SentencePiece model, e.g. LLaMA's tokenizer.model")
    group.add_argument("--vocab_path", default=None, help="vocabulary file, one token per line (bert, char, space); "
                       "bpe: also vocab.json; hfpretrained: a saved HF tokenizer directory")
    group.add_argument("--merges_path", default=None, help="bpe: GPT-2's merges.txt")
    group.add_argument(
        "--do_lower_case", choices=("true", "false"), default="true", help="bert: lower-case and strip accents"
    )


def tokenizer_config_from_args(args: Any) -> TokenizerConfig:
    """The TokenizerConfig of a namespace filled by ``add_tokenizer_args``."""
    return TokenizerConfig(
        tokenizer=args.tokenizer,
        spm_model_path=args.spm_model_path,
        vocab_path=args.vocab_path,
        merges_path=args.merges_path,
        do_lower_case=args.do_lower_case == "true",
    )
