"""A preallocated key/value cache for incremental decoding.

The cache holds ``max_length`` slots per row. A forward pass over T new tokens writes slots
``[length, length + T)`` of every layer, then ``advance`` moves ``length`` on. Each slot also records the
segment id of its token (0 = padding), so left-padded rows of a batch never attend to their padding.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer: (B, kv_heads, max_length, head_size) each, plus slot segment ids."""

    def __init__(
        self,
        *,
        layers_num: int,
        batch_size: int,
        kv_heads_num: int,
        head_size: int,
        max_length: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        shape = (batch_size, kv_heads_num, max_length, head_size)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers_num)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers_num)]
        self.slot_seg = torch.zeros(batch_size, max_length, dtype=torch.long, device=device)  # (B, S)
        self.length = 0
        self.max_length = max_length

    @property
    def batch_size(self) -> int:
        return self.slot_seg.shape[0]

    def check_room(self, new_tokens: int) -> None:
        if self.length + new_tokens > self.max_length:
            raise ValueError(
                f"KV cache full: {self.length} + {new_tokens} tokens exceed its {self.max_length} slots"
            )

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new k, v (B, kv_heads, T, D) of ``layer``; return all keys/values so far (B, kv_heads, S, D)."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def stage(self, seg: torch.Tensor) -> torch.Tensor:
        """Record the segment ids (B, T) of the tokens about to be written; return those of all slots so far (B, S)."""
        self.check_room(seg.shape[1])
        end = self.length + seg.shape[1]
        self.slot_seg[:, self.length : end] = seg
        return self.slot_seg[:, :end]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep the rows ``rows`` (B',) of the batch, in that order (beam search follows its beams with it)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.slot_seg = self.slot_seg.index_select(0, rows)

    def advance(self, new_tokens: int) -> None:
        """Move past the tokens that every layer has just written."""
        self.length += new_tokens
