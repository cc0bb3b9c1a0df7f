"""Fixtures of the fine-tuning tests: a character vocabulary with BERT's special tokens, a tiny BERT config and
small task files written here (no download, no shared data)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = "好棒赞美优秀喜欢满意舒服快乐"
NEGATIVE = "差烂坏糟失望讨厌难受生气慢"
FILLER = "这个酒店房间服务的很非常我们觉得还是了一次东西"
TINY_BERT = {
    "emb_size": 32, "feedforward_size": 64, "hidden_size": 32, "hidden_act": "gelu", "heads_num": 2,
    "layers_num": 2, "max_seq_length": 64, "dropout": 0.0, "embedding": ["word", "pos", "seg"],
    "encoder": "transformer", "mask": "fully_visible", "target": ["mlm", "sp"], "tie_weights": True,
}


@pytest.fixture(scope="session")
def vocab_path(tmp_path_factory) -> str:
    """Every character the fixtures write, one per line, after BERT's special tokens."""
    chars = sorted(set(POSITIVE + NEGATIVE + FILLER + "0123456789，。！？"))
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(SPECIALS + chars) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def bert_config_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("config") / "tiny_bert.json"
    path.write_text(json.dumps(TINY_BERT), encoding="utf-8")
    return str(path)


def sentiment_sentence(rng: random.Random, label: int) -> str:
    """Filler characters with 2 sentiment characters of class ``label`` (1 positive, 0 negative)."""
    words = [rng.choice(FILLER) for _ in range(rng.randint(4, 12))]
    for _ in range(2):
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
    return "".join(words)


def write_sentiment_tsv(path: Path, n: int, seed: int, *, pair: bool = False, with_label: bool = True) -> Path:
    """A classification TSV of ``n`` lines (header ``label text_a [text_b]``) that a tiny model can learn."""
    rng = random.Random(seed)
    header = (["label"] if with_label else []) + ["text_a"] + (["text_b"] if pair else [])
    lines = ["\t".join(header)]
    for _ in range(n):
        label = rng.randint(0, 1)
        fields = ([str(label)] if with_label else []) + [sentiment_sentence(rng, label)]
        if pair:
            fields.append("".join(rng.choice(FILLER) for _ in range(rng.randint(2, 6))))
        lines.append("\t".join(fields))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def sentiment_files(tmp_path) -> dict[str, str]:
    return {name: str(write_sentiment_tsv(tmp_path / f"{name}.tsv", n, seed))
            for name, n, seed in (("train", 240, 1), ("dev", 60, 2), ("test", 60, 3))}
