"""SentencePiece tokenizer (LLaMA's ``tokenizer.model``).

Special ids come from the model file itself, never from a token map on disk: ``bos_id``, ``eos_id`` and
``unk_id`` are the processor's. LLaMA's model has no pad piece; then ``pad_id`` is the byte piece ``<0x00>``
(LLaMA's convention, id 3) when the model has byte fallback, else ``unk_id``. Padding is never attended to nor
scored, so the choice only has to be a valid id.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sentencepiece

from tencentpretrain.errors import TokenizerError
from tencentpretrain.registry import TOKENIZERS
from tencentpretrain.tokenizers.base import Tokenizer, TokenizerConfig, require_file

PAD_BYTE_PIECE = "<0x00>"


def load_sentencepiece(path: str) -> sentencepiece.SentencePieceProcessor:
    """The SentencePiece model at ``path`` (an existing file), or a TokenizerError saying it is not one."""
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(model_file=path)
    except (OSError, RuntimeError) as e:
        raise TokenizerError(f"{path}: not a SentencePiece model ({e})") from None
    return processor


@TOKENIZERS.register("sentencepiece")
class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model; byte-fallback pieces decode back to UTF-8 text."""

    name = "sentencepiece"

    def __init__(self, model_path: str) -> None:
        self.model_path = require_file(model_path, "--spm_model_path", "SentencePiece model")
        self._sp = load_sentencepiece(self.model_path)
        self.bos_id = _optional_id(self._sp.bos_id())
        self.eos_id = _optional_id(self._sp.eos_id())
        self.unk_id = _optional_id(self._sp.unk_id())
        self.pad_id = _optional_id(self._sp.pad_id())
        if self.pad_id is None:
            byte_pad = self._sp.piece_to_id(PAD_BYTE_PIECE)
            self.pad_id = byte_pad if self._sp.id_to_piece(byte_pad) == PAD_BYTE_PIECE else self.unk_id
        pieces = self._sp.encode("a", out_type=str)
        self._dummy_prefix = bool(pieces) and pieces[0].startswith("\u2581")

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> SentencePieceTokenizer:
        return cls(config.spm_model_path)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def adds_dummy_prefix(self) -> bool:
        return self._dummy_prefix

    @property
    def files(self) -> tuple[str, ...]:
        return (self.model_path,)

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_array(self, text: str) -> np.ndarray:
        return self._sp.encode_as_numpy(text)  # (L,) int32, without the Python list

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # One thread: preprocessing already runs one process per core.
        return self._sp.encode(list(texts), num_threads=1)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def piece_to_id(self, piece: str) -> int:
        return self._sp.piece_to_id(piece)

    def is_byte(self, token_id: int) -> bool:
        """Whether ``token_id`` is a byte-fallback piece (``<0xNN>``)."""
        return self._sp.is_byte(int(token_id))


def _optional_id(token_id: int) -> int | None:
    return token_id if token_id >= 0 else None
