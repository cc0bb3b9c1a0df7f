"""Preprocessing driver: byte-identical output for any --processes_num, range boundaries, errors, cleanup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tencentpretrain.data.builder import build_dataset, line_number
from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import IndexedDataset
from tencentpretrain.errors import ConfigError, DataError, TokenizerError
from tencentpretrain.tokenizers import TokenizerConfig

ZH = ["春天来了，河边的柳树发出了新芽。", "学习一门新的语言需要耐心。", "",
      "The quick brown fox jumps over the lazy dog."]


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _corpus(kind: str) -> list:
    long_line = "这是一行特别长的文本，" * 60  # much longer than the 64-byte test ranges
    if kind == "lm":
        return [*ZH * 5, long_line, *ZH, long_line]  # the last line is longer than its range
    if kind == "alpaca":
        rows = [{"instruction": f"第{i}个问题：{z}", "output": f"回答{i}。{z}"} for i, z in enumerate(ZH * 4)]
        return [*rows, {"instruction": long_line, "output": "短"}]  # too long for seq_length: skipped, last line
    return [{"messages": [{"role": "user", "content": z or "空"}, {"role": "assistant", "content": "好的。" + z}]}
            for z in ZH * 4] + [{"messages": [{"role": "user", "content": long_line},
                                               {"role": "assistant", "content": "嗯"}]}]


@pytest.mark.parametrize(
    "kind, options",
    [("lm", {}), ("lm", {"full_sentences": True}), ("alpaca", {"data_processor": "alpaca"}),
     ("chat", {"data_processor": "chat"})],
)
def test_processes_1_and_4_give_identical_bytes(build, kind, options):
    lines = _corpus(kind)
    one = build(lines, name="one.pt", processes_num=1, seq_length=48, **options)
    four = build(lines, name="four.pt", processes_num=4, chunk_bytes=64, seq_length=48, **options)
    default = build(lines, name="default.pt", processes_num=4, seq_length=48, **options)
    for other in (four, default):
        got, want = _files(other), _files(one)
        assert set(got) == set(want)
        for name in want:
            if name != "manifest.json":
                assert got[name] == want[name], name
        assert IndexedDataset(other).manifest["counts"] == IndexedDataset(one).manifest["counts"]


def test_long_last_line_no_duplicates(build, tok):
    long_line = "很长的最后一行。" * 30
    lines = ["一。", "二。", long_line]
    ds = IndexedDataset(build(lines, processes_num=4, chunk_bytes=16, seq_length=1000))
    docs = [ds[i][0].tolist() for i in range(len(ds))]
    assert docs == [[tok.bos_id, *tok.encode(x), tok.eos_id] for x in lines]
    assert ds.manifest["counts"]["lines"] == 3


def test_missing_final_newline_and_crlf(build, tok):
    ds = IndexedDataset(build("第一行\r\n第二行".encode(), seq_length=32))
    assert [ds[i][0].tolist() for i in range(len(ds))] == [
        [tok.bos_id, *tok.encode(t), tok.eos_id] for t in ("第一行", "第二行")
    ]


def _assert_clean(directory: Path) -> None:
    leftovers = [p.name for p in directory.iterdir() if ".pt" in p.name and not p.name.endswith(".corpus")]
    assert leftovers == []


@pytest.mark.parametrize("processes", [1, 3])
def test_malformed_json_names_path_and_line(build, tmp_path, processes):
    lines = [{"instruction": "a", "output": "b"}] * 5 + ['{"instruction": "broken"'] + [{"output": "c"}]
    with pytest.raises(DataError, match=r"ds\.pt\.corpus:6: invalid JSON .*--skip_bad_lines"):
        build(lines, data_processor="alpaca", processes_num=processes, chunk_bytes=40)
    _assert_clean(tmp_path)


def test_invalid_utf8_and_bad_fields(build, tmp_path):
    with pytest.raises(DataError, match=r":2: invalid UTF-8"):
        build(b"good line\nbad \xff\xfe line\n")
    with pytest.raises(DataError, match=r":1: field 'output' must be a string"):
        build([{"instruction": "x", "output": 3}], data_processor="alpaca")
    with pytest.raises(DataError, match=r":1: missing field 'text'"):
        build([{"txt": "x"}], data_processor="llm_pretrain")
    _assert_clean(tmp_path)


def test_skip_bad_lines_counts_them(build, caplog):
    corpus = '{"text": "好的一行"}\n[1, 2]\n'.encode() + b"\xff\n" + '{"text": "又一行"}\nnot json\n'.encode()
    ds = IndexedDataset(build(corpus, json_format_corpus=True, skip_bad_lines=True))
    assert ds.manifest["counts"]["skipped"] == {"invalid_utf8": 1, "malformed_json": 2}
    assert ds.manifest["counts"]["instances"] == 2
    assert any(":3: skipped: invalid UTF-8" in r.message for r in caplog.records)


def test_input_errors_leave_nothing_behind(tmp_path, spm_path, corpus_writer):
    write_corpus = corpus_writer
    corpus = write_corpus(tmp_path / "c.txt", ["文本"])
    tok = TokenizerConfig(spm_model_path=spm_path)
    out = str(tmp_path / "ds.pt")
    with pytest.raises(DataError, match="corpus file not found"):
        build_dataset(DataConfig(corpus_path=str(tmp_path / "none.txt"), dataset_path=out), tok)
    with pytest.raises(DataError, match="the corpus is empty"):
        build_dataset(DataConfig(corpus_path=str(write_corpus(tmp_path / "e.txt", b"")), dataset_path=out), tok)
    with pytest.raises(DataError, match="no training instances.*empty_line: 2"):
        build_dataset(DataConfig(corpus_path=str(write_corpus(tmp_path / "b.txt", ["", " "])), dataset_path=out), tok)
    with pytest.raises(TokenizerError, match="SentencePiece model not found"):
        build_dataset(DataConfig(corpus_path=str(corpus), dataset_path=out),
                      TokenizerConfig(spm_model_path=str(tmp_path / "x.model")))
    with pytest.raises(ConfigError, match="seq_length must be at least 1"):
        DataConfig(corpus_path=str(corpus), seq_length=0)
    with pytest.raises(ConfigError, match="did you mean 'alpaca'"):
        DataConfig(corpus_path=str(corpus), data_processor="alpacca")
    assert sorted(os.listdir(tmp_path)) == ["b.txt", "c.txt", "e.txt"]


def test_seq_length_too_small_for_any_answer(build, tmp_path):
    with pytest.raises(DataError, match="prompt_too_long: 1"):
        build([{"instruction": "一个问题", "output": "回答"}], data_processor="alpaca", seq_length=2)
    _assert_clean(tmp_path)


def test_replaces_a_dataset_but_not_other_directories(build, tmp_path):
    first = build(["一"], name="ds.pt")
    second = build(["一", "二"], name="ds.pt")
    assert first == second and IndexedDataset(second).manifest["counts"]["instances"] == 2
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(DataError, match="refusing to overwrite"):
        build(["一"], name="mine")
    assert (other / "precious.txt").read_text() == "keep"


def test_line_number(tmp_path, corpus_writer):
    path = corpus_writer(tmp_path / "c.txt", ["a", "bb", "ccc"])
    assert [line_number(str(path), o) for o in (0, 2, 5)] == [1, 2, 3]


def test_legacy_pickle_file_is_reported(tmp_path):
    legacy = tmp_path / "dataset.pt"
    legacy.write_bytes(b"\x80\x04pickle")
    with pytest.raises(DataError, match="original TencentPretrain"):
        IndexedDataset(legacy)


def test_interrupted_build_keeps_the_previous_dataset(build, tmp_path, monkeypatch):
    import tencentpretrain.data.builder as builder

    previous = _files(build(["一"], name="ds.pt"))

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "_merge_shards", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build(["二", "三"], name="ds.pt", processes_num=2, chunk_bytes=8)
    assert _files(tmp_path / "ds.pt") == previous
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "corpus, processor", [("zh_corpus.txt", "lm"), ("instructions.jsonl", "alpaca"), ("conversations.jsonl", "chat")]
)
def test_shipped_sample_data_preprocesses_cleanly(tmp_path, spm_path, corpus, processor):
    config = DataConfig(corpus_path=str(ROOT / "data" / corpus), dataset_path=str(tmp_path / "ds.pt"),
                        data_processor=processor, seq_length=512)
    counts = build_dataset(config, TokenizerConfig(spm_model_path=spm_path))["counts"]
    assert counts["skipped"] == {} and counts["documents"] == counts["lines"] > 0


def test_refuses_to_replace_a_file(build, tmp_path, corpus_writer, spm_path):
    """--dataset_path naming a regular file (here the corpus itself) is refused, and the file is untouched."""
    corpus = corpus_writer(tmp_path / "corpus.txt", ["一", "二"])
    before = corpus.read_bytes()
    config = DataConfig(corpus_path=str(corpus), dataset_path=str(corpus), seq_length=16)
    with pytest.raises(DataError, match=r"corpus.txt: is a file, not a dataset directory.*refusing to overwrite"):
        build_dataset(config, TokenizerConfig(spm_model_path=spm_path))
    assert corpus.read_bytes() == before
    legacy = tmp_path / "dataset.pt"
    legacy.write_bytes(b"\x80\x04pickle")
    with pytest.raises(DataError, match="convert_original_dataset.py"):
        build(["一"], name="dataset.pt")
    assert legacy.read_bytes() == b"\x80\x04pickle"


def test_removes_staging_directories_a_killed_run_left(build, tmp_path):
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()  # its pid is now free: the run that used it is gone
    stale = [tmp_path / f".ds.pt.staging-a1.tmp-{proc.pid}", tmp_path / f".ds.pt.old-b2.tmp-{proc.pid}"]
    live = tmp_path / f".ds.pt.staging-c3.tmp-{os.getppid()}"  # a running process's staging directory is kept
    for path in (*stale, live):
        (path / "shards").mkdir(parents=True)
    build(["一"], name="ds.pt")
    assert [p for p in stale if p.exists()] == [] and live.exists()
