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
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import torch

from tencentpretrain.data.dataset import MASK_RESPONSE, MASK_SCORED, IndexedDataset
from tencentpretrain.errors import ConfigError, DataError

if TYPE_CHECKING:
    from tencentpretrain.config import ModelConfig


def _move(value: Any, device: torch.device | str, non_blocking: bool) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: v.to(device, non_blocking=non_blocking) for k, v in value.items()}
    return value.to(device, non_blocking=non_blocking)


class Batch(NamedTuple):
    """One batch; ``T`` is ``seq_length``.

    Language-model data (``lm``, ``alpaca``, ``chat``): ``tgt`` is ``src`` shifted by one. ``seg`` follows
    TencentPretrain: 0 = padding, 1 = a real token, 2 = a real token whose target is a response token (SFT);
    ``seg > 0`` is the attention mask. ``loss_mask`` marks the positions whose ``tgt`` is scored.

    Other processors fill the fields as ``Model.forward`` takes them: ``tgt`` may be a dict {target name:
    tensor} (``bert``: {"mlm": (B, T), "sp": (B,)}) or (B,) labels (``vit``, whose ``src`` is (B, C, H, W)
    float images). Encoder-decoder data (``t5``) comes as a ``Seq2SeqBatch``.
    """

    src: torch.Tensor  # (B, T) int64, or (B, C, H, W) float images
    tgt: torch.Tensor | dict[str, torch.Tensor]  # (B, T) / (B,) int64, or a dict of those
    seg: torch.Tensor  # (B, T) int64
    loss_mask: torch.Tensor  # (B, T) bool

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch with every tensor (also inside a ``tgt`` dict) moved to ``device``."""
        return Batch(*(_move(value, device, non_blocking) for value in self))

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of ``Model.forward`` beyond (src, tgt, seg, loss_mask): none."""
        return {}


class Seq2SeqBatch(NamedTuple):
    """An encoder-decoder batch (``t5``): ``src``/``seg`` (B, T) feed the encoder; ``tgt_in``/``tgt_seg`` (B, T')
    the decoder, which predicts ``tgt`` (B, T') where ``loss_mask`` (B, T') is True."""

    src: torch.Tensor  # (B, T) int64
    tgt: torch.Tensor  # (B, T') int64
    seg: torch.Tensor  # (B, T) int64, 0 = padding
    loss_mask: torch.Tensor  # (B, T') bool
    tgt_in: torch.Tensor  # (B, T') int64 decoder input ids (tgt shifted right after the start id)
    tgt_seg: torch.Tensor  # (B, T') int64, 0 = padding

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Seq2SeqBatch:
        return Seq2SeqBatch(*(_move(value, device, non_blocking) for value in self))

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """The decoder inputs, as ``Model.forward(..., tgt_in=, tgt_seg=)`` takes them."""
        return {"tgt_in": self.tgt_in, "tgt_seg": self.tgt_seg}


class Collator(Protocol):
    """Turns the dataset instances at ``indices`` into a Batch (a processor's ``build_collator`` makes one).

    ``epoch`` lets dynamic masking draw new masks each epoch; a collator draws its randomness from the seed, the
    epoch and the instance index only, so a batch does not depend on the rank, the batch size or what came before
    (a restored loader yields exactly the next batch).
    """

    def __call__(self, indices: Sequence[int], epoch: int) -> Batch | Seq2SeqBatch: ...


class LmCollator:
    """The language-model processors' collator: ``collate`` of the instances (no randomness)."""

    def __init__(self, dataset: IndexedDataset, seq_length: int) -> None:
        self.dataset, self.seq_length = dataset, seq_length

    def __call__(self, indices: Sequence[int], epoch: int) -> Batch:
        return collate([self.dataset[int(i)] for i in indices], self.seq_length, self.dataset.pad_id)


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
        model_config: the model the batches are for; processors whose batches depend on it (``vit``: the number
            of patches) need it, the others use it to check that the model's targets fit the data.
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
        model_config: ModelConfig | None = None,
    ) -> None:
        self.dataset = IndexedDataset(dataset_path)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.seq_length = self._check_seq_length(seq_length)
        self._check_sizes()
        if data_processor is not None:
            self._check_processor(data_processor)
        self.collator = self._build_collator(model_config)
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

    def _build_collator(self, model_config: ModelConfig | None) -> Collator:
        from tencentpretrain.registry import DATA_PROCESSORS

        processor = DATA_PROCESSORS.get(self.dataset.processor)
        return processor.build_collator(self.dataset, seq_length=self.seq_length, seed=self.seed,
                                        model_config=model_config)

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

    def __next__(self) -> Batch | Seq2SeqBatch:
        if self.offset + self.global_batch_size > len(self.dataset):
            self.epoch, self.offset, self._order = self.epoch + 1, 0, None
        start = self.offset + self.rank * self.batch_size
        indices = self._epoch_order()[start : start + self.batch_size]
        self.offset += self.global_batch_size
        return self.collator(indices, self.epoch)

    def epoch_batches(self) -> Iterator[Batch | Seq2SeqBatch]:
        """One pass over the whole dataset for evaluation, every instance exactly once across the ranks.

        Unlike iteration, the last global batch may be partial. Every rank yields the same number of batches
        (collective ops such as ZeRO-3 parameter gathering need that): a rank with nothing left gets a batch
        of one instance whose loss mask is empty, so it adds no tokens. Does not move the loader's position.
        """
        order = self._epoch_order() if self.shuffle else np.arange(len(self.dataset))
        steps = -(-len(self.dataset) // self.global_batch_size)  # ceil
        for step in range(steps):
            start = step * self.global_batch_size + self.rank * self.batch_size
            indices = order[start : start + self.batch_size]
            if len(indices):
                yield self.collator(indices, self.epoch)
            else:
                batch = self.collator(order[:1], self.epoch)
                yield batch._replace(loss_mask=torch.zeros_like(batch.loss_mask))

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
