"""The loader: shapes, per-epoch shuffle, rank sharding, exact resume."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tencentpretrain.data.loader import Batch, BatchLoader, collate
from tencentpretrain.errors import ConfigError, DataError

DOCS = [f"第{i}篇文章：今天天气很好，我们一起去公园散步。" * (1 + i % 3) for i in range(23)]


@pytest.fixture
def lm_dataset(build):
    return build(DOCS, seq_length=16)


def _same(a: Batch, b: Batch) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_batch_shapes_and_shift(lm_dataset):
    loader = BatchLoader(lm_dataset, 4, seed=1)
    batch = next(loader)
    assert [t.shape for t in batch] == [torch.Size([4, 16])] * 4
    assert [t.dtype for t in batch] == [torch.int64, torch.int64, torch.int64, torch.bool]
    assert torch.equal(batch.src[:, 1:][batch.seg[:, 1:] > 0], batch.tgt[:, :-1][batch.seg[:, 1:] > 0])
    assert torch.equal(batch.loss_mask, batch.seg > 0)  # lm: every real position is scored
    assert (batch.tgt[~batch.loss_mask] == loader.dataset.pad_id).all()


def test_epoch_covers_dataset_and_reshuffles(lm_dataset):
    loader = BatchLoader(lm_dataset, 5, seed=3)
    n, steps = len(loader.dataset), loader.steps_per_epoch
    assert steps == n // 5
    first = torch.cat([next(loader).src for _ in range(steps)])
    assert loader.epoch == 0
    second = torch.cat([next(loader).src for _ in range(steps)])
    assert loader.epoch == 1
    # no instance twice in an epoch: the rows are a sub-multiset of the dataset's instances
    every = collate([loader.dataset[i] for i in range(n)], 16, loader.dataset.pad_id).src
    available = Counter(tuple(r) for r in every.tolist())
    used = Counter(tuple(r) for r in first.tolist())
    assert all(available[row] >= k for row, k in used.items()) and sum(used.values()) == steps * 5
    assert not torch.equal(first, second)
    again = BatchLoader(lm_dataset, 5, seed=3)
    assert torch.equal(torch.cat([next(again).src for _ in range(steps)]), first)


def test_no_shuffle_is_file_order(lm_dataset):
    loader = BatchLoader(lm_dataset, 2, shuffle=False)
    first = next(loader)
    tokens0 = loader.dataset[0][0]
    assert first.src[0, : len(tokens0) - 1].tolist() == tokens0[:-1].tolist()


def test_ranks_split_each_global_batch(lm_dataset):
    ranks = [BatchLoader(lm_dataset, 3, seed=5, rank=r, world_size=2) for r in range(2)]
    single = BatchLoader(lm_dataset, 6, seed=5)
    for _ in range(7):  # crosses an epoch boundary
        parts = [next(r) for r in ranks]
        whole = next(single)
        assert torch.equal(torch.cat([p.src for p in parts]), whole.src)
        assert torch.equal(torch.cat([p.loss_mask for p in parts]), whole.loss_mask)


@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_equals_uninterrupted(lm_dataset, world_size):
    def loaders():
        return [BatchLoader(lm_dataset, 2, seed=11, rank=r, world_size=world_size) for r in range(world_size)]

    straight = loaders()
    reference = [[next(ld) for _ in range(12)] for ld in straight]
    interrupted = loaders()
    for ld in interrupted:
        for _ in range(5):
            next(ld)
    states = [ld.state_dict() for ld in interrupted]
    resumed = loaders()
    for ld, state in zip(resumed, states, strict=True):
        ld.load_state_dict(state)
    for r, ld in enumerate(resumed):
        for k in range(5, 12):  # 12 batches of 2 x world_size cross the epoch boundary
            assert _same(next(ld), reference[r][k])


def test_resume_with_another_world_size_continues_the_order(lm_dataset):
    one = BatchLoader(lm_dataset, 4, seed=2)
    next(one)
    two = [BatchLoader(lm_dataset, 2, seed=2, rank=r, world_size=2) for r in range(2)]
    for ld in two:
        ld.load_state_dict(one.state_dict())
    assert torch.equal(torch.cat([next(ld).src for ld in two]), next(one).src)


def test_state_mismatch_errors(lm_dataset, build):
    state = BatchLoader(lm_dataset, 2, seed=1).state_dict()
    with pytest.raises(ConfigError, match="seed 1"):
        BatchLoader(lm_dataset, 2, seed=2).load_state_dict(state)
    other = build(DOCS[:9], name="other.pt", seq_length=16)
    with pytest.raises(DataError, match="another dataset"):
        BatchLoader(other, 2, seed=1).load_state_dict(state)


def test_sft_batch_seg_and_mask(build, tok):
    records = [{"instruction": "问题：", "output": "回答。"}] * 3
    loader = BatchLoader(build(records, data_processor="alpaca", seq_length=32), 3, data_processor="llm_sft")
    batch = next(loader)
    assert torch.equal(batch.loss_mask, batch.seg == 2)
    assert batch.tgt[0][batch.loss_mask[0]].tolist() == [*tok.encode("回答。"), tok.eos_id]
    assert (batch.seg[0] == 1).sum() == len(tok.encode("问题："))


def test_loader_argument_errors(lm_dataset):
    with pytest.raises(ConfigError, match="shorter than the dataset"):
        BatchLoader(lm_dataset, 2, seq_length=8)
    assert BatchLoader(lm_dataset, 2, seq_length=20).seq_length == 20
    with pytest.raises(DataError, match="fewer than one global batch"):
        BatchLoader(lm_dataset, 1000)
    with pytest.raises(ConfigError, match="rank 2"):
        BatchLoader(lm_dataset, 1, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="does not match"):
        BatchLoader(lm_dataset, 1, data_processor="chat")


def test_padded_wider_batches(lm_dataset):
    batch = next(BatchLoader(lm_dataset, 2, seq_length=40, seed=0))
    assert batch.src.shape == (2, 40)
    assert np.all(batch.seg[:, 20:].numpy() == 0)


def test_epoch_batches_score_every_instance_once_across_ranks(lm_dataset):
    """Evaluation's pass: the partial last batch is kept, and every rank yields the same number of batches."""
    n = len(BatchLoader(lm_dataset, 4, seed=0).dataset)
    passes = [list(BatchLoader(lm_dataset, 4, seed=0, rank=r, world_size=2, shuffle=False).epoch_batches())
              for r in range(2)]
    assert len(passes[0]) == len(passes[1]) == -(-n // 8)
    scored_rows = sum(int(b.loss_mask.any(dim=1).sum()) for p in passes for b in p)
    assert scored_rows == n  # every instance once; the padding batch of an idle rank scores nothing
    tokens = sum(int(b.loss_mask.sum()) for p in passes for b in p)
    single = BatchLoader(lm_dataset, 3, seed=0, shuffle=False)
    assert tokens == sum(int(b.loss_mask.sum()) for b in single.epoch_batches())
    assert single.offset == 0 and single.epoch == 0  # the training position is untouched
