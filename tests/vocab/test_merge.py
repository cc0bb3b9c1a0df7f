"""merge: base pieces keep id/score/type, new pieces appended, ASCII rules, report, determinism, round trips."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from tencentpretrain.errors import TokenizerError
from tencentpretrain.tokenizers import build_tokenizer
from tencentpretrain.vocab.merge import (
    BYTE,
    DEFAULT_PROBE,
    NORMAL,
    MergeConfig,
    check_extension,
    load_model_proto,
    merge_model_protos,
    merge_tokenizers,
    piece_text,
    serialize_model,
)
from tests.vocab.helpers import EN_CORPUS, ZH_CORPUS, read_lines


def pieces(proto):
    return [(p.piece, p.score, p.type) for p in proto.pieces]


def test_every_base_piece_keeps_id_score_and_type(spms):
    base, merged = load_model_proto(spms.base), load_model_proto(spms.merged)
    assert pieces(merged)[: len(base.pieces)] == pieces(base)
    check_extension(base, merged)  # the same invariant, as the library checks it
    assert merged.normalizer_spec == base.normalizer_spec
    sp_base = spm.SentencePieceProcessor(model_file=spms.base)
    sp_merged = spm.SentencePieceProcessor(model_file=spms.merged)
    for name in ("unk_id", "bos_id", "eos_id", "pad_id"):
        assert getattr(sp_merged, name)() == getattr(sp_base, name)()
    byte_ids = [i for i, p in enumerate(merged.pieces) if p.type == BYTE]
    assert len(byte_ids) == 256 and byte_ids == [i for i, p in enumerate(base.pieces) if p.type == BYTE]


def test_new_pieces_are_the_eligible_chinese_pieces_appended_in_order(spms):
    base, zh, merged = (load_model_proto(p) for p in (spms.base, spms.zh, spms.merged))
    base_set = {p.piece for p in base.pieces}
    expected = [
        p.piece for p in zh.pieces
        if p.type == NORMAL and p.piece not in base_set and not piece_text(p.piece).isascii()
        and not any(c.isascii() and c.isalnum() for c in p.piece)
    ]
    new = merged.pieces[len(base.pieces):]
    assert [p.piece for p in new] == expected
    assert spms.report.added == len(expected) > 500
    assert all(p.type == NORMAL for p in new)
    skipped = spms.report.skipped
    assert skipped["special"] == 259 and skipped["in_base"] > 0 and skipped["ascii_alnum"] > 0
    assert sum(skipped.values()) + spms.report.added == len(zh.pieces)
    # BPE base: new scores sit below every base score and keep the Chinese model's order
    floor = min(p.score for p in base.pieces if p.type == NORMAL)
    assert [p.score for p in new] == [floor - 1 - i for i in range(len(new))]


def test_by_default_no_new_piece_has_ascii_letters_or_digits(spms):
    merged = load_model_proto(spms.merged)
    new = [piece_text(p.piece) for p in merged.pieces[spms.report.base_pieces:]]
    assert not [t for t in new if any(c.isascii() and c.isalnum() for c in t)]
    assert not [t for t in new if t.isascii()]


def test_report_numbers(spms):
    report = spms.report
    zh = read_lines(ZH_CORPUS)
    sp_base = spm.SentencePieceProcessor(model_file=spms.base)
    sp_merged = spm.SentencePieceProcessor(model_file=spms.merged)
    assert report.zh_chars == sum(len(line) for line in zh)
    assert report.zh_tokens_before == sum(len(sp_base.encode(line)) for line in zh)
    assert report.zh_tokens_after == sum(len(sp_merged.encode(line)) for line in zh)
    assert report.zh_tokens_per_char_before > 2.0  # mostly 3 bytes a character
    assert report.zh_tokens_per_char_after < 0.4 * report.zh_tokens_per_char_before
    assert report.probe_lines == len(DEFAULT_PROBE) and report.probe_changed == []
    assert report.unreachable == []
    assert report.to_dict()["zh_tokens_per_char_after"] == report.zh_tokens_per_char_after


def test_english_and_code_tokenize_exactly_as_before(spms):
    sp_base = spm.SentencePieceProcessor(model_file=spms.base)
    sp_merged = spm.SentencePieceProcessor(model_file=spms.merged)
    lines = read_lines(EN_CORPUS) + list(DEFAULT_PROBE)
    assert [sp_merged.encode(line) for line in lines] == [sp_base.encode(line) for line in lines]


def test_allowing_ascii_pieces_changes_english_and_the_report_lists_it(spms, tmp_path):
    out = str(tmp_path / "ascii.model")
    probe = ("The GPU runs Python code.", "Nothing changes here.")
    report = merge_tokenizers(spms.base, spms.zh, out, MergeConfig(allow_ascii_alnum=True), probe_lines=probe)
    assert report.skipped["ascii_alnum"] == 0 and report.added > spms.report.added
    assert [c.line for c in report.probe_changed] == ["The GPU runs Python code."]
    change = report.probe_changed[0]
    assert "▁GPU" in change.after and "▁GPU" not in change.before
    assert "<0x55>" in change.before  # "U" was a byte before; the Chinese model brought it in as a piece


def test_merging_twice_gives_identical_bytes(spms, tmp_path):
    a, b = str(tmp_path / "a.model"), str(tmp_path / "b.model")
    merge_tokenizers(spms.base, spms.zh, a)
    merge_tokenizers(spms.base, spms.zh, b)
    with open(a, "rb") as fa, open(b, "rb") as fb, open(spms.merged, "rb") as fm:
        assert fa.read() == fb.read() == fm.read()


ROUND_TRIP = [
    "扩充词表以后，常用汉字不再被拆成三个字节。",
    "The quick brown fox jumps over the lazy dog.",
    "我们用 Python 和 GPU 训练模型，loss 降到了 1.25。",
    "今天很开心 😀🎉👍🏽，明天见！",
    "生僻字：𠀀𪚥龘靐齉，还有 café、naïve 与 Ελληνικά。",
    "  leading spaces, two  inside,\ttab and\nnewline ",
    "<sep> is a user piece; 用户：<sep>你好",
    "",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_merged_tokenizer_round_trips(spms, text):
    tokenizer = build_tokenizer("sentencepiece", spm_model_path=spms.merged)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < tokenizer.vocab_size for i in ids)


def test_chinese_text_uses_the_new_pieces(spms):
    tokenizer = build_tokenizer("sentencepiece", spm_model_path=spms.merged)
    ids = tokenizer.encode(ROUND_TRIP[0])
    assert tokenizer.vocab_size == spms.report.merged_pieces
    assert sum(i >= spms.report.base_pieces for i in ids) >= len(ids) // 2
    assert not any(tokenizer.is_byte(i) for i in ids)


def test_keep_scores_and_limit(spms):
    base, zh = load_model_proto(spms.base), load_model_proto(spms.zh)
    merged, added, skipped = merge_model_protos(base, zh, MergeConfig(score_mode="keep", max_new_pieces=10))
    assert len(added) == 10 and skipped["limit"] == spms.report.added - 10
    zh_scores = {p.piece: p.score for p in zh.pieces}
    assert [p.score for p in merged.pieces[len(base.pieces):]] == [zh_scores[p] for p in added]


def test_a_model_that_is_not_an_extension_is_rejected(spms):
    base, merged = load_model_proto(spms.base), load_model_proto(spms.merged)
    swapped = type(merged)()
    swapped.CopyFrom(merged)
    swapped.pieces[300].piece, swapped.pieces[301].piece = merged.pieces[301].piece, merged.pieces[300].piece
    with pytest.raises(TokenizerError, match="id 300"):
        check_extension(base, swapped)
    with pytest.raises(TokenizerError, match="fewer"):
        check_extension(merged, base)
    assert serialize_model(merged) == serialize_model(load_model_proto(spms.merged))


def test_not_a_model_file(tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"\xff\x00not a protobuf")
    with pytest.raises(TokenizerError, match="bad.model"):
        load_model_proto(str(bad))
    with pytest.raises(TokenizerError, match="cannot read"):
        load_model_proto(str(tmp_path / "missing.model"))
