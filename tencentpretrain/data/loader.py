"""The training loader: fixed-shape batches from a dataset directory, shuffled per epoch, sharded across
data-parallel ranks, resumable.

Order: epoch ``e`` visits the instances in ``permutation(N)`` drawn from ``numpy.random.default_rng([seed, e])``
(file order with ``shuffle=False``). Every step consumes the next ``batch_size * world_size`` instances of that
order; rank ``r`` takes the ``r``-th block of ``batch_size``. The few instances left at the end of an epoch
(fewer than one global batch) are not used in that epoch; the next epoch reshuffles. The loader is an infinite
iterator over epochs, like the original's; ``epoch`` and ``steps_per_epoch`` tell where it is.

``state_dict()`` holds the epoch and how many instances of it were consumed; a loader restored from it yields
exactly the batch the saved one would have yielded next. Since the position counts instances, a run may resume
with another ``world_size`` or ``batch_size``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from tencentpretrain.data.dataset import IndexedDataset
from tencentpretrain.data.processors.base import MASK_RESPONSE, MASK_SCORED
from tencentpretrain.errors import ConfigError, DataError


class Batch(NamedTuple):
    """One batch; ``T`` is ``seq_length``.

    ``tgt`` is ``src`` shifted by one. ``seg`` follows TencentPretrain: 0 = padding, 1 = a real token, 2 = a real
    token whose target is a response token (SFT); ``seg > 0`` is the attention mask. ``loss_mask`` marks the
    positions whose ``tgt`` is scored.
    """

    src: torch.Tensor  # (B, T) int64
    tgt: torch.Tensor  # (B, T) int64
    seg: torch.Tensor  # (B, T) int64
    loss_mask: torch.Tensor  # (B, T) bool


def collate(instances: Sequence[tuple[np.ndarray, np.ndarray | None]], seq_length: int, pad_id: int) -> Batch:
    """Pad ``(tokens, mask)`` instances of at most ``seq_length + 1`` tokens into a Batch of shape (B, seq_length)."""
    batch_size = len(instances)
    tokens = np.full((batch_size, seq_length + 1), pad_id, dtype=np.int64)  # (B, T + 1)
    marks = np.zeros((batch_size, seq_length + 1), dtype=np.uint8)  # (B, T + 1) loss-mask values
    lengths = np.zeros(batch_size, dtype=np.int64)
    for b, (ids, mask) in enumerate(instances):
        n = len(ids)
        if n > seq_length + 1:
            raise DataError(f"an instance has {n} tokens, more than seq_length + 1 = {seq_length + 1}")
        tokens[b, :n] = ids
        if mask is None:
            marks[b, 1:n] = MASK_SCORED
        else:
            marks[b, :n] = mask
        lengths[b] = n
    target_marks = marks[:, 1:]  # (B, T): the mark of each position's target
    real = np.arange(seq_length)[None, :] < (lengths - 1)[:, None]  # (B, T)
    seg = np.where(target_marks == MASK_RESPONSE, 2, real.astype(np.int64))
    return Batch(
        src=torch.from_numpy(np.ascontiguousarray(tokens[:, :-1])),
        tgt=torch.from_numpy(np.ascontiguousarray(tokens[:, 1:])),
        seg=torch.from_numpy(seg),
        loss_mask=torch.from_numpy(target_marks > 0),
    )


class BatchLoader:
    """Infinite iterator of ``Batch`` for one data-parallel rank.

    Args:
        dataset_path: a directory written by ``preprocess.py``.
        batch_size: instances per batch on this rank.
        seed: seeds the per-epoch shuffle; every rank must use the same.
        rank, world_size: this rank among the data-parallel ranks.
        shuffle: False visits instances in file order every epoch.
        seq_length: batch width; default the dataset's. A larger value pads more; a smaller one is an error.
        data_processor: if given, the dataset must have been built by this processor (aliases allowed).
    """

    def __init__(
        self,
        dataset_path: str | os.PathLike,
        batch_size: int,
        *,
        seed: int = 7,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seq_length: int | None = None,
        data_processor: str | None = None,
    ) -> None:
        self.dataset = IndexedDataset(dataset_path)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.seq_length = self._check_seq_length(seq_length)
        self._check_sizes()
        if data_processor is not None:
            self._check_processor(data_processor)
        self.epoch = 0
        self.offset = 0  # instances of this epoch's order already consumed by all ranks together
        self._order: np.ndarray | None = None

    # ------------------------------------------------------------------ checks
    def _check_seq_length(self, seq_length: int | None) -> int:
        built = self.dataset.seq_length
        if seq_length is not None and seq_length < built:
            raise ConfigError(
                f"--seq_length {seq_length} is shorter than the dataset's ({built}, {self.dataset.path}); pass "
                f"--seq_length {built} or run preprocess.py again with --seq_length {seq_length}"
            )
        return seq_length or built

    def _check_sizes(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is not in [0, world_size={self.world_size})")
        if len(self.dataset) < self.global_batch_size:
            raise DataError(
                f"{self.dataset.path}: {len(self.dataset)} instances are fewer than one global batch "
                f"(batch_size {self.batch_size} x world_size {self.world_size})"
            )

    def _check_processor(self, name: str) -> None:
        from tencentpretrain.registry import DATA_PROCESSORS

        wanted = DATA_PROCESSORS.get(name).name
        if wanted != self.dataset.processor:
            raise ConfigError(
                f"--data_processor {name} does not match {self.dataset.path}, which was built by "
                f"{self.dataset.manifest.get('data_processor', self.dataset.processor)!r}"
            )

    # ------------------------------------------------------------------ iteration
    @property
    def global_batch_size(self) -> int:
        """Instances consumed per step by all ranks together."""
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return len(self.dataset) // self.global_batch_size

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            n = len(self.dataset)
            rng = np.random.default_rng([self.seed, self.epoch])
            self._order = rng.permutation(n) if self.shuffle else np.arange(n)
        return self._order

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.offset + self.global_batch_size > len(self.dataset):
            self.epoch, self.offset, self._order = self.epoch + 1, 0, None
        start = self.offset + self.rank * self.batch_size
        indices = self._epoch_order()[start : start + self.batch_size]
        self.offset += self.global_batch_size
        return collate([self.dataset[int(i)] for i in indices], self.seq_length, self.dataset.pad_id)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: enough to continue with exactly the next batch."""
        return {
            "epoch": self.epoch,
            "offset": self.offset,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_instances": len(self.dataset),
            "fingerprint": self.dataset.fingerprint,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; the dataset, seed and shuffle setting must be the ones it was saved with."""
        if state["fingerprint"] != self.dataset.fingerprint or state["num_instances"] != len(self.dataset):
            raise DataError(
                f"the saved loader state belongs to another dataset ({state['num_instances']} instances) than "
                f"{self.dataset.path} ({len(self.dataset)} instances)"
            )
        if state["seed"] != self.seed or state["shuffle"] != self.shuffle:
            raise ConfigError(
                f"the saved loader state used seed {state['seed']} and shuffle={state['shuffle']}; "
                f"this loader has seed {self.seed} and shuffle={self.shuffle}"
            )
        self.epoch, self.offset, self._order = int(state["epoch"]), int(state["offset"]), None
