"""A KV cache whose rows belong to independent requests that join and leave between decode steps.

Layout: the rows ``[0, active)`` are in use; all of them share one slot counter ``length`` (the base KVCache's),
and each row is left-padded: a request whose prompt and output fill ``span`` slots occupies
``[length - span, length)``; the slots before are padding (segment 0) that attention never sees. Positions
for rotary embeddings are passed per row, so where a row sits in the slots does not change its result.

* ``insert``: rows prefilled in a separate (left-padded) cache are copied into free rows at the right end,
  shifting the existing rows right first when the new prompt is longer than ``length``.
* ``remove``: a finished row is overwritten by the last active row, so active rows stay contiguous and a decode
  step only computes live rows.
* ``compact``: the padding that every active row has in front is dropped, which makes room when
  ``length`` reaches ``max_length``.
"""

from __future__ import annotations

import torch

from tencentpretrain.layers.kv_cache import KVCache


class SlotKVCache(KVCache):
    """A KVCache of ``batch_size`` row slots, of which the first ``active`` are in use."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.active = 0
        self.starts: list[int] = []  # first non-padding slot of each active row

    # -- the KVCache protocol, restricted to the active rows ---------------------------------------------------
    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (active, kv_heads, T, D); return those of all slots so far (active, kv_heads, S, D)."""
        rows, end = k.shape[0], self.length + k.shape[2]
        self.keys[layer][:rows, :, self.length : end] = k
        self.values[layer][:rows, :, self.length : end] = v
        return self.keys[layer][:rows, :, :end], self.values[layer][:rows, :, :end]

    def stage(self, seg: torch.Tensor) -> torch.Tensor:
        """Record segment ids (active, T) of the tokens about to be written; return (active, S) for all slots."""
        self.check_room(seg.shape[1])
        rows, end = seg.shape[0], self.length + seg.shape[1]
        self.slot_seg[:rows, self.length : end] = seg
        return self.slot_seg[:rows, :end]

    # -- rows joining and leaving --------------------------------------------------------------------------------
    @property
    def free_rows(self) -> int:
        return self.batch_size - self.active

    def insert(self, prefilled: KVCache) -> list[int]:
        """Copy the rows of a prefilled, left-padded cache into free rows; return their row indices."""
        rows, span = prefilled.batch_size, prefilled.length
        if rows > self.free_rows:
            raise ValueError(f"no free row: {rows} requested, {self.free_rows} free")
        if span > self.max_length:
            raise ValueError(f"a prompt of {span} tokens does not fit the cache's {self.max_length} slots")
        self.compact()
        if span > self.length:
            self._shift_right(span - self.length)
        first, start = self.active, self.length - span
        for layer in range(len(self.keys)):
            self.keys[layer][first : first + rows, :, start : self.length] = prefilled.keys[layer][:, :, :span]
            self.values[layer][first : first + rows, :, start : self.length] = prefilled.values[layer][:, :, :span]
        self.slot_seg[first : first + rows, :start] = 0
        self.slot_seg[first : first + rows, start : self.length] = prefilled.slot_seg[:, :span]
        self.slot_seg[first : first + rows, self.length :] = 0
        row_starts = (prefilled.slot_seg[:, :span] > 0).long().argmax(1).tolist()
        self.starts += [start + s for s in row_starts]
        self.active += rows
        return list(range(first, first + rows))

    def remove(self, row: int) -> int | None:
        """Free ``row``. The last active row moves into it; return that row's old index (None if none moved)."""
        last = self.active - 1
        moved = None
        if row != last:
            for layer in range(len(self.keys)):
                self.keys[layer][row, :, : self.length] = self.keys[layer][last, :, : self.length]
                self.values[layer][row, :, : self.length] = self.values[layer][last, :, : self.length]
            self.slot_seg[row] = self.slot_seg[last]
            self.starts[row] = self.starts[last]
            moved = last
        self.slot_seg[last] = 0
        self.starts.pop()
        self.active -= 1
        if self.active == 0:
            self.length = 0
        return moved

    def compact(self) -> int:
        """Drop the leading slots that are padding in every active row; return how many were dropped."""
        if self.active == 0:
            self.length = 0
            return 0
        shift = min(self.starts)
        if shift == 0:
            return 0
        n, kept = self.active, self.length - shift
        for cache in (*self.keys, *self.values):
            cache[:n, :, :kept] = cache[:n, :, shift : self.length].clone()
        self.slot_seg[:n, :kept] = self.slot_seg[:n, shift : self.length].clone()
        self.slot_seg[:n, kept:] = 0
        self.starts = [s - shift for s in self.starts]
        self.length = kept
        return shift

    def make_room(self, new_tokens: int = 1) -> bool:
        """Compact if the next ``new_tokens`` slots do not fit; return whether they fit now."""
        if self.length + new_tokens > self.max_length:
            self.compact()
        return self.length + new_tokens <= self.max_length

    def _shift_right(self, shift: int) -> None:
        n, length = self.active, self.length
        if n:
            for cache in (*self.keys, *self.values):
                cache[:n, :, shift : shift + length] = cache[:n, :, :length].clone()
            self.slot_seg[:n, shift : shift + length] = self.slot_seg[:n, :length].clone()
            self.slot_seg[:n, :shift] = 0
        self.starts = [s + shift for s in self.starts]
        self.length = length + shift
