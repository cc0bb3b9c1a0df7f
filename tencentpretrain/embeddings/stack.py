"""The embedding stack of a model side (``embedding`` / ``tgt_embedding``): the registered embeddings named by the
config, summed, then layer norm and dropout. State keys ``{side}.{name}.*`` and ``{side}.layer_norm.*``."""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.layers.dropout import Dropout
from tencentpretrain.layers.standard_layer_norm import affine_layernorm_name
from tencentpretrain.registry import EMBEDDINGS, LAYERNORMS


class Embedding(nn.Module):
    """Sum of the named embeddings, then the optional embedding layer norm and dropout.

    An embedding that declares ``whole_embedding`` (``dual``) is the only one named and is used as it is: no sum,
    no layer norm here (the original's rule, which gives its state keys).
    """

    def __init__(self, config: ModelConfig, vocab_size: int, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names
        for name in names:
            self.add_module(name, EMBEDDINGS.get(name)(config, vocab_size))
        self.whole = getattr(EMBEDDINGS.get(names[0]), "whole_embedding", False)
        if config.use_embedding_layernorm and not self.whole:
            norm = LAYERNORMS.get(affine_layernorm_name(config.layernorm))
            self.layer_norm = norm(config.emb_size, eps=config.layernorm_eps)
        self.dropout = Dropout(config.dropout)

    def default_positions(self, src: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, T) positions start, start + 1, ...; T is the number of tokens the embeddings produce for
        ``src`` (an embedding that is not one token per input id, such as ``patch``, says so with
        ``sequence_length(src)``)."""
        first = getattr(self, self.names[0])
        if self.whole:
            return first.default_positions(src, start)
        length = first.sequence_length(src) if hasattr(first, "sequence_length") else src.shape[1]
        return torch.arange(start, start + length, device=src.device).expand(src.shape[0], -1)

    def forward(self, src: torch.Tensor, seg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """src, seg, positions (B, T) -> (B, T, E) (for a whole embedding, whatever it takes and gives)."""
        if self.whole:
            return getattr(self, self.names[0])(src, seg, positions)
        parts = [getattr(self, name)(src, seg, positions) for name in self.names]
        emb = sum(part.to(parts[0].dtype) for part in parts)  # fixed tables (sinusoidalpos) are float32
        if hasattr(self, "layer_norm"):
            emb = self.layer_norm(emb)
        return self.dropout(emb)
