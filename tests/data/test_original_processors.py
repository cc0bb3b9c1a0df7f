"""Golden outputs: what our processors store (and batch) equals what the ORIGINAL TencentPretrain's preprocess.py
stored for the same corpus, flags and vocabulary (tests/assets/original_processors/, made by
tests/assets/make_original_processors.py from a run of the original; the flags are in its commands.json).

Exact comparisons for every processor whose stored instances involve no randomness: ``mt``, ``prefixlm``, ``cls``,
``bilm``, ``gsg --sentence_selection_strategy lead``, and, with ``--dynamic_masking`` (masks drawn at batch time),
``cls_mlm``, ``mlm --full_sentences`` and ``t5``. The randomness of masks and permutations cannot be matched (the
original draws from Python's global ``random``), so ``bart``, ``gsg random`` and the sentinel scheme of ``t5`` are
checked in tests/data/test_seq2seq_processors.py against expectations derived from the original's rules.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tencentpretrain.data.builder import build_dataset
from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import FLAG_SEGMENT_B, IndexedDataset
from tencentpretrain.data.loader import BatchLoader
from tencentpretrain.tokenizers import TokenizerConfig
from tests.helpers import REPO_ROOT

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "original_processors"
VOCAB = str(Path(REPO_ROOT) / "models" / "google_zh_vocab.txt")
COMMANDS = json.loads((ASSETS / "commands.json").read_text(encoding="utf-8"))


def _original(name: str) -> list:
    return json.loads((ASSETS / f"{name}.json").read_text(encoding="utf-8"))


def _options(flags: list[str]) -> dict:
    """DataConfig keyword arguments of the original's flags."""
    options, i = {}, 0
    while i < len(flags):
        key = flags[i].lstrip("-")
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            value = flags[i + 1]
            options[key] = VOCAB if value == "models/google_zh_vocab.txt" else value
            i += 2
        else:
            options[key] = True
            i += 1
    for key in ("seq_length", "tgt_seq_length", "dup_factor"):
        if key in options:
            options[key] = int(options[key])
    return options


def _build(tmp_path: Path, name: str, vocab: str | None = None) -> IndexedDataset:
    command = COMMANDS[name]
    path = tmp_path / f"{name}.pt"
    config = DataConfig(corpus_path=str(ASSETS / command["corpus"]), dataset_path=str(path),
                        **_options(command["flags"]))
    build_dataset(config, TokenizerConfig(tokenizer="bert", vocab_path=vocab or VOCAB))
    return IndexedDataset(path)


def sentinel_vocab(tmp_path: Path) -> str:
    """models/google_zh_vocab.txt + <extra_id_0..99>: the ids of the original's google_zh_with_sentinel_vocab.txt
    (the original's t5 preprocessing needs no sentinels, ours checks for them)."""
    path = tmp_path / "sentinel_vocab.txt"
    sentinels = "".join(f"<extra_id_{i}>\n" for i in range(100))
    path.write_text(Path(VOCAB).read_text(encoding="utf-8") + sentinels, encoding="utf-8")
    return str(path)


def _records(dataset: IndexedDataset) -> list[tuple[list[int], np.ndarray | None]]:
    flags = dataset.token_flags is not None
    return [(dataset[i][0].tolist(), np.asarray(dataset.flags(i)) if flags else None) for i in range(len(dataset))]


def _unpadded(pair: list) -> list[int]:
    """The ids of an original ``(ids, pad_num)`` entry (the original pads in its loader)."""
    ids, _pad_num = pair
    return list(ids)


def test_mt_pairs_equal_the_original(tmp_path):
    dataset = _build(tmp_path, "mt")
    ours = _records(dataset)
    original = _original("mt")
    assert len(ours) == len(original) == 10
    for (tokens, flags), (src, tgt, seg_pos) in zip(ours, original):
        target_start = int(np.argmax(flags & FLAG_SEGMENT_B))
        assert tokens[:target_start] == _unpadded(src) and seg_pos == [target_start]
        assert tokens[target_start:] == _unpadded(tgt)
    batch = next(BatchLoader(dataset.path, 10, shuffle=False))  # the original's MtDataloader layout
    for row, (src, tgt, seg_pos) in enumerate(original):
        ids, pad_num = tgt
        padded = list(ids) + [0] * pad_num
        assert batch.src[row].tolist() == list(src[0]) + [0] * src[1]
        assert batch.tgt_in[row].tolist() == padded[:-1] and batch.tgt[row].tolist() == padded[1:]
        assert batch.seg[row].tolist() == [1] * seg_pos[0] + [0] * (48 - seg_pos[0])
        assert batch.tgt_seg[row].tolist() == [1] * (len(ids) - 1) + [0] * (41 - len(ids))


def test_prefixlm_equals_the_original(tmp_path):
    dataset = _build(tmp_path, "prefixlm")
    original = _original("prefixlm")
    assert len(dataset) == len(original)
    batch = next(BatchLoader(dataset.path, len(dataset), shuffle=False))
    for row, (src, tgt, seg_pos) in enumerate(original):
        assert dataset[row][0].tolist() == _unpadded(src)
        assert batch.src[row].tolist() == list(src[0]) + [0] * src[1]
        start, end = seg_pos
        assert batch.seg[row].tolist() == [1] * start + [2] * (end - start) + [0] * (64 - end)
        # The original's labels: 0 over the prefix, then the next tokens; we score exactly the next tokens.
        scored = batch.loss_mask[row].nonzero().flatten().tolist()
        assert scored == list(range(start - 1, end - 1))
        assert batch.tgt[row, start - 1 : end - 1].tolist() == tgt[start - 1 : end - 1]


def test_cls_equals_the_original(tmp_path):
    dataset = _build(tmp_path, "cls")
    original = _original("cls")
    assert len(dataset) == len(original) == 10
    batch = next(BatchLoader(dataset.path, 10, shuffle=False))
    for row, (src, label, seg_pos) in enumerate(original):
        assert dataset[row][0].tolist() == _unpadded(src) and dataset.label(row) == label == batch.tgt[row]
        segments = [1] * seg_pos[0] + ([2] * seg_pos[1] if len(seg_pos) == 2 else [])
        assert batch.seg[row].tolist() == segments + [0] * (40 - len(segments))


def test_cls_mlm_stored_pairs_equal_the_original(tmp_path):
    dataset = _build(tmp_path, "cls_mlm")
    original = _original("cls_mlm")
    assert len(dataset) == len(original) == 10
    batch = next(BatchLoader(dataset.path, 10, shuffle=False))
    for row, (src, label, seg_pos) in enumerate(original):
        assert dataset[row][0].tolist() == _unpadded(src) and dataset.label(row) == label
        segments = [1] * seg_pos[0] + ([2] * seg_pos[1] if len(seg_pos) == 2 else [])
        assert batch.seg[row].tolist() == segments + [0] * (40 - len(segments))
        assert batch.tgt["mlm"][row, : len(segments)].tolist() == _unpadded(src)
    assert batch.tgt["cls"].tolist() == [label for _, label, _ in original]
    assert 0 < batch.loss_mask.sum() < (batch.seg > 0).sum()


def test_bilm_equals_the_original(tmp_path):
    dataset = _build(tmp_path, "bilm")
    original = _original("bilm")
    assert len(dataset) == len(original)
    batch = next(BatchLoader(dataset.path, len(dataset), shuffle=False))
    for row, (src, forward, backward, seg_pos) in enumerate(original):
        n = seg_pos[0]
        assert dataset[row][0].tolist() == _unpadded(src) and n == len(src[0])
        assert batch.tgt[row, :n, 0].tolist() == forward and batch.tgt[row, :n, 1].tolist() == backward
        assert batch.seg[row].tolist() == [1] * n + [0] * (32 - n)


def test_gsg_lead_equals_the_original(tmp_path):
    dataset = _build(tmp_path, "gsg")
    ours = _records(dataset)
    original = _original("gsg")
    # The original's document reader stops before the corpus's last line and keeps a document only after reading
    # the blank line that ends it, so it loses the last document; every pair it did build is ours, in order.
    assert len(ours) > len(original) == 4
    for (tokens, flags), (src, tgt, seg_pos) in zip(ours, original):
        target_start = int(np.argmax(flags & FLAG_SEGMENT_B))
        assert tokens[:target_start] == _unpadded(src) and seg_pos == [target_start]
        assert tokens[target_start:] == _unpadded(tgt)
    batch = next(BatchLoader(dataset.path, 4, shuffle=False))
    assert batch.tgt_in.shape[1] == 31  # tgt_seq_length - 1, the original's width


@pytest.mark.parametrize("name", ["mlm_full_sentences", "t5"])
def test_mlm_instances_equal_the_original(tmp_path, name):
    dataset = _build(tmp_path, name, sentinel_vocab(tmp_path) if name == "t5" else None)
    original = _original(name)
    assert [dataset[i][0].tolist() for i in range(len(dataset))] == [_unpadded(src) for src, _ in original]
    assert [len(dataset[i][0]) for i in range(len(dataset))] == [seg_pos[0] for _, seg_pos in original]
