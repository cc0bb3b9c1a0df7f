"""Word embedding (config ``embedding: ["word", ...]``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.registry import EMBEDDINGS


@EMBEDDINGS.register("word")
class WordEmbedding(nn.Module):
    """Token ids -> vectors. State key: ``embedding.word.embedding.weight`` (V, E).

    With ``sinusoidalpos`` (or another embedding that declares ``scales_word_embedding``, such as
    ``pegasus_sinusoidalpos``) among the config's (source-side) ``embedding`` names, the vectors are scaled by
    sqrt(emb_size), on both sides of an encoder-decoder: the original's rule (the Transformer paper's), which
    keeps the word vectors comparable in size to the fixed sin/cos rows.

    Capabilities (read by ``tencentpretrain.models.capabilities``, not by name): this is a word embedding
    whose table ``word_weight`` heads tie to, and that table has one row per vocabulary piece.
    """

    word_weight = "embedding.weight"
    vocabulary_rows = ("embedding.weight",)

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, config.emb_size)
        scaled = any(getattr(EMBEDDINGS.get(name), "scales_word_embedding", False) for name in config.embedding)
        self.scale = math.sqrt(config.emb_size) if scaled else None

    def forward(self, src: torch.Tensor, seg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """src (B, T) -> (B, T, E)."""
        emb = self.embedding(src)
        return emb if self.scale is None else emb * self.scale
