"""The real tokens of a padded batch, for running the token-wise layers without the padding.

In a transformer layer everything but attention works token by token (the projections, the feed-forward block,
layer norms, dropout, residuals), so it can run on the (N, H) rows of the real tokens instead of (B, T, H): a
batch padded to its longest input is about a third padding in a classification data set such as ChnSentiCorp,
and that third of the work goes. Attention gets its usual (B, T, ...) layout back with zeros at the padding, whose
keys the mask hides; the padding positions' states come back as zeros instead of being computed.
"""

from __future__ import annotations

import torch


class Packing:
    """Packs (B, T, C) tensors to the (N, C) rows of the real tokens marked by ``valid`` (B, T), and back."""

    def __init__(self, valid: torch.Tensor) -> None:
        self.batch, self.length = valid.shape
        self.index = valid.reshape(-1).nonzero().squeeze(1)  # (N,) positions in the flattened (B*T) batch

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (N, C)."""
        return x.reshape(self.batch * self.length, x.shape[-1]).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (B, T, C), zeros at the padding."""
        out = x.new_zeros(self.batch * self.length, x.shape[-1]).index_copy(0, self.index, x)
        return out.view(self.batch, self.length, x.shape[-1])
