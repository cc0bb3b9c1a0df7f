"""XLM-RoBERTa's tokenizer (``--tokenizer xlmroberta --spm_model_path sentencepiece.bpe.model``).

XLM-R was trained in fairseq, whose dictionary puts ``<s> <pad> </s> <unk>`` at ids 0-3, then the SentencePiece
pieces in model order without the model's own specials, then ``<mask>``. With XLM-R's model (``<unk> <s> </s>``
at SentencePiece ids 0-2) every other piece lands at its SentencePiece id + 1, which is the offset both the
original and HF apply. Text is split by plain SentencePiece encoding as HF does (the original also re-split
pieces ending in "digit,", an XLNet habit; XLM-R was not trained with it).
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.registry import TOKENIZERS
from tencentpretrain.tokenizers.base import Tokenizer, TokenizerConfig, require_file
from tencentpretrain.tokenizers.spm import load_sentencepiece

FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
MASK = "<mask>"
WORD_BOUNDARY = "\u2581"


@TOKENIZERS.register("xlmroberta")
class XLMRobertaTokenizer(Tokenizer):
    """A SentencePiece model seen through fairseq's dictionary order."""

    name = "xlmroberta"

    def __init__(self, model_path: str) -> None:
        self.model_path = require_file(model_path, "--spm_model_path", "SentencePiece model (sentencepiece.bpe.model)")
        self._sp = load_sentencepiece(self.model_path)
        pieces = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
        self.tokens = [*FAIRSEQ_SPECIALS, *(p for p in pieces if p not in FAIRSEQ_SPECIALS), MASK]
        self.token_to_id = {token: i for i, token in enumerate(self.tokens)}
        self._from_sp = [self.token_to_id[p] for p in pieces]  # SentencePiece id -> our id
        self.bos_id, self.pad_id, self.eos_id, self.unk_id = range(4)
        self.mask_id = len(self.tokens) - 1
        self._skipped = {self.bos_id, self.pad_id, self.eos_id, self.unk_id, self.mask_id}
        pieces_of_a = self._sp.encode("a", out_type=str)
        self._dummy_prefix = bool(pieces_of_a) and pieces_of_a[0].startswith(WORD_BOUNDARY)

    @classmethod
    def from_config(cls, config: TokenizerConfig) -> XLMRobertaTokenizer:
        return cls(config.spm_model_path)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def adds_dummy_prefix(self) -> bool:
        return self._dummy_prefix

    @property
    def files(self) -> tuple[str, ...]:
        return (self.model_path,)

    def encode(self, text: str) -> list[int]:
        return [self._from_sp[i] for i in self._sp.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """Pieces joined with word boundaries as spaces; specials (unk and mask too) are dropped, as HF's
        ``decode(..., skip_special_tokens=True)`` does."""
        pieces = [self.tokens[int(i)] for i in ids if int(i) not in self._skipped]
        text = "".join(pieces).replace(WORD_BOUNDARY, " ")
        return text[1:] if pieces and pieces[0].startswith(WORD_BOUNDARY) else text

    def id_to_piece(self, token_id: int) -> str:
        return self.tokens[int(token_id)]

    def piece_to_id(self, piece: str) -> int:
        return self.token_to_id.get(piece, self.unk_id)
