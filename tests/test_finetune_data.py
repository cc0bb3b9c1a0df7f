"""datasets/: the committed fine-tuning data is what scripts/make_finetune_data.py writes, in the original's formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT

DATASETS = Path(REPO_ROOT) / "datasets"


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    text = path.read_bytes().decode("utf-8")  # strict UTF-8
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def test_the_committed_files_are_what_the_script_writes(tmp_path):
    script = Path(REPO_ROOT) / "scripts" / "make_finetune_data.py"
    subprocess.run([sys.executable, str(script), "--output_dir", str(tmp_path)], check=True, capture_output=True)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(DATASETS) for p in DATASETS.rglob("*") if p.is_file() and p.name != "README.md")
    assert written == committed
    for name in written:
        assert (tmp_path / name).read_bytes() == (DATASETS / name).read_bytes(), name


def test_sentiment_files_have_the_chnsenticorp_format():
    for split, size in (("train", 1200), ("dev", 300), ("test", 300)):
        header, rows = _rows(DATASETS / "review_sentiment" / f"{split}.tsv")
        assert header == ["label", "text_a"] and len(rows) == size
        assert {r[0] for r in rows} == {"0", "1"} and all(len(r) == 2 and r[1] for r in rows)
        assert 0.4 < sum(r[0] == "1" for r in rows) / size < 0.6
        assert len({r[1] for r in rows}) == size  # no review repeated within a split
    header, rows = _rows(DATASETS / "review_sentiment" / "test_nolabel.tsv")
    assert header == ["text_a"] and [r[0] for r in rows] == [r[1] for r in _rows(DATASETS / "review_sentiment" /
                                                                                 "test.tsv")[1]]


def test_ner_files_have_the_msra_format():
    label2id = json.loads((DATASETS / "ner_zh" / "label2id.json").read_text(encoding="utf-8"))
    assert sorted(label2id.values()) == list(range(7)) and label2id["O"] == 0
    for split in ("train", "dev", "test"):
        header, rows = _rows(DATASETS / "ner_zh" / f"{split}.tsv")
        assert header == ["text_a", "label"]
        for chars, tags in rows:
            chars, tags = chars.split(" "), tags.split(" ")
            assert len(chars) == len(tags) and all(len(c) == 1 for c in chars) and set(tags) <= set(label2id)
            for previous, tag in zip(["O", *tags], tags):  # an I- tag continues an entity of its own kind
                assert not tag.startswith("I-") or previous[2:] == tag[2:]
