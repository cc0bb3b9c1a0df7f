"""The two-stream embedding (config ``embedding: ["dual"]`` with ``encoder: "dual"``): SBERT, the siamese LSTM
and CLIP configs of the original.

Each stream ``i`` has its own embedding stack ``embedding_i`` (built from the stream's config, see
``ModelConfig.streams``: its embeddings summed, its layer norm and dropout), then, as in the original, a second
layer norm ``stream_i_layer_norm`` (when the stream keeps embedding layer norms) and this module's dropout.
``tie_weights: true`` makes the two stacks one module (stored under both names, as the original saved it); the
stream layer norms are never shared. Inputs and outputs are pairs (stream 0, stream 1).

State keys: ``embedding.dual.embedding_{0,1}.*``, ``embedding.dual.stream_{0,1}_layer_norm.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.embeddings.stack import Embedding
from tencentpretrain.layers.dropout import Dropout
from tencentpretrain.layers.standard_layer_norm import affine_layernorm_name
from tencentpretrain.registry import EMBEDDINGS, LAYERNORMS

Pair = tuple[torch.Tensor, torch.Tensor]


@EMBEDDINGS.register("dual")
class DualEmbedding(nn.Module):
    """Two embedding stacks, one per stream."""

    whole_embedding = True  # the model's embedding is this module alone (no sum, no outer layer norm)
    # the streams' word tables, where a stream has one (a patch stream has none; tied streams share one)
    vocabulary_rows = ("embedding_0.word.embedding.weight", "embedding_1.word.embedding.weight")

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        for i, stream in enumerate(config.streams):
            if i == 1 and config.tie_weights:
                self.embedding_1 = self.embedding_0
            else:
                self.add_module(f"embedding_{i}", Embedding(stream, vocab_size, stream.embedding))
            if stream.use_embedding_layernorm:
                norm = LAYERNORMS.get(affine_layernorm_name(stream.layernorm))
                self.add_module(f"stream_{i}_layer_norm", norm(stream.emb_size, eps=stream.layernorm_eps))
        self.dropout = Dropout(config.dropout)

    def default_positions(self, src: Pair, start: int = 0) -> Pair:
        """Each stream's (B, T_i) positions."""
        return (self.embedding_0.default_positions(src[0], start), self.embedding_1.default_positions(src[1], start))

    def embed(self, stream: int, src: torch.Tensor, seg: torch.Tensor, positions: torch.Tensor | None = None
              ) -> torch.Tensor:
        """One stream: (B, T) ids (or images for a ``patch`` stream) -> (B, T, E)."""
        embedding = getattr(self, f"embedding_{stream}")
        if positions is None:
            positions = embedding.default_positions(src)
        emb = embedding(src, seg, positions)
        norm = getattr(self, f"stream_{stream}_layer_norm", None)
        return self.dropout(emb if norm is None else norm(emb))

    def forward(self, src: Pair, seg: Pair, positions: Pair | None = None) -> Pair:
        """Pairs of (B, T_i) -> pair of (B, T_i, E_i)."""
        positions = positions if positions is not None else (None, None)
        return self.embed(0, src[0], seg[0], positions[0]), self.embed(1, src[1], seg[1], positions[1])
