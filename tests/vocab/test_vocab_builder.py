"""build_vocab: deterministic output, the options that matter for Chinese, long lines, bad input."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm

from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.vocab.build import (
    CorpusStats,
    VocabBuildConfig,
    build_vocab,
    split_long_line,
    training_sentences,
)
from tencentpretrain.vocab.merge import BYTE, CONTROL, USER_DEFINED, load_model_proto
from tests.vocab.helpers import ZH_CORPUS, base_config, write_base_corpus


def test_same_input_gives_identical_bytes_in_different_places(tmp_path):
    outputs = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        corpus = write_base_corpus(str(d / "corpus.txt"))
        result = build_vocab(base_config(corpus, str(d / "out.model")))
        outputs.append(((d / "out.model").read_bytes(), (d / "out.vocab").read_bytes(), result.sha256))
    assert outputs[0] == outputs[1]
    assert len(outputs[0][0]) > 1000


def test_llama_style_options_are_in_the_model(spms):
    proto = load_model_proto(spms.base)
    assert len(proto.pieces) == 600
    types = [p.type for p in proto.pieces]
    assert [p.piece for p in proto.pieces[:3]] == ["<unk>", "<s>", "</s>"]
    assert types.count(BYTE) == 256
    assert [p.piece for p in proto.pieces if p.type == BYTE][:2] == ["<0x00>", "<0x01>"]
    assert [p.piece for p in proto.pieces if p.type == USER_DEFINED] == ["<sep>"]
    assert [p.piece for p in proto.pieces if p.type == CONTROL] == ["<s>", "</s>", "<ctrl>"]
    assert proto.normalizer_spec.name == "identity"
    sp = spm.SentencePieceProcessor(model_file=spms.base)
    assert sp.encode("2048", out_type=str)[-4:] == ["2", "0", "4", "8"]  # split digits
    assert sp.encode("a<sep>b", out_type=str).count("<sep>") == 1  # user-defined piece kept whole
    emoji = sp.encode("😀", out_type=str)
    assert emoji[-4:] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]  # byte fallback


def test_long_line_is_cut_at_sentence_ends():
    line = "今天下雨了。" * 10 + "我们在家看书！" * 10
    chunks = split_long_line(line, max_bytes=60)
    assert "".join(chunks) == line
    assert all(len(c.encode("utf-8")) <= 60 for c in chunks)
    assert all(c.endswith(("。", "！")) for c in chunks)
    # packed greedily: 3 x 18 bytes, 3 x 18, 3 x 18, 18 + 2 x 21, then 4 chunks of 2 x 21
    assert [len(c.encode('utf-8')) for c in chunks] == [54, 54, 54, 60, 42, 42, 42, 42]
    assert split_long_line("short", 60) == ["short"]


def test_sentence_longer_than_the_limit_is_cut_by_characters():
    chunks = split_long_line("字" * 50, max_bytes=30)  # 3 bytes a character
    assert chunks == ["字" * 10] * 5


def test_long_corpus_lines_are_kept_not_skipped(tmp_path):
    corpus = tmp_path / "long.txt"
    corpus.write_text("春天来了，花开了。" * 200 + "\n\n短的一行。\n", encoding="utf-8")
    config = VocabBuildConfig(corpus_paths=(str(corpus),), output_model_path=str(tmp_path / "m.model"),
                              vocab_size=300, max_sentence_length=300, hard_vocab_limit=False)
    stats = CorpusStats()
    sentences = training_sentences(config, stats)
    assert (stats.lines, stats.empty, stats.cut) == (3, 1, 1)
    assert len(sentences) == 1 + len(split_long_line("春天来了，花开了。" * 200, 300))
    result = build_vocab(config)
    sp = spm.SentencePieceProcessor(model_file=result.model_path)
    assert sp.piece_to_id("春") != sp.unk_id()


def test_sampling_is_seeded(tmp_path):
    def build(seed, name):
        config = VocabBuildConfig(corpus_paths=(ZH_CORPUS,), output_model_path=str(tmp_path / name),
                                  vocab_size=800, input_sentence_size=40, seed=seed)
        stats = CorpusStats()
        return training_sentences(config, stats), build_vocab(config).sha256

    (s1, h1), (s2, h2), (s3, _) = build(0, "a.model"), build(0, "b.model"), build(1, "c.model")
    assert len(s1) == 40 and s1 == s2 and h1 == h2
    assert s1 != s3


def test_json_corpus_and_bad_input(tmp_path):
    good = tmp_path / "c.jsonl"
    lines = [json.dumps({"text": "第一行文本。" * (i + 1)}) for i in range(30)]
    good.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = VocabBuildConfig(corpus_paths=(str(good),), output_model_path=str(tmp_path / "j.model"),
                              vocab_size=100, json_format=True)
    assert training_sentences(config, CorpusStats())[0] == "第一行文本。"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "好"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        training_sentences(VocabBuildConfig(corpus_paths=(str(bad),), output_model_path="x", json_format=True),
                           CorpusStats())
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="no non-empty lines"):
        build_vocab(VocabBuildConfig(corpus_paths=(str(empty),), output_model_path=str(tmp_path / "e.model")))
    assert not (tmp_path / "e.model").exists()
    with pytest.raises(DataError, match="cannot read corpus"):
        build_vocab(VocabBuildConfig(corpus_paths=(str(tmp_path / "missing.txt"),), output_model_path="x"))


def test_invalid_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="model_type"):
        VocabBuildConfig(corpus_paths=("x",), output_model_path="y", model_type="wordpiece")
    with pytest.raises(ConfigError, match="character_coverage"):
        VocabBuildConfig(corpus_paths=("x",), output_model_path="y", character_coverage=1.5)
    with pytest.raises(ConfigError, match="Increase vocab_size|vocab_size"):
        build_vocab(VocabBuildConfig(corpus_paths=(ZH_CORPUS,), output_model_path=str(tmp_path / "s.model"),
                                     vocab_size=50))
