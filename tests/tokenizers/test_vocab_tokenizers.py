from __future__ import annotations

from pathlib import Path

import pytest

from tencentpretrain.errors import TokenizerError
from tencentpretrain.tokenizers import build_tokenizer
from tencentpretrain.tokenizers.wordpiece import basic_tokenize


def test_bert_special_ids_from_vocab(bert_vocab):
    tok = build_tokenizer("bert", vocab_path=bert_vocab)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 3, 16)


def test_wordpiece_golden_ids(bert_vocab):
    tok = build_tokenizer("bert", vocab_path=bert_vocab)
    # "unaffable" -> un ##aff ##able; CJK characters split; punctuation split; unknown word -> [UNK]
    assert tok.encode("Hello unaffable 中国,world! xyz") == [5, 7, 8, 9, 10, 11, 12, 6, 13, 1]
    assert tok.decode(tok.encode("unaffable world")) == "unaffable world"
    assert tok.decode([2, 5, 3, 0]) == "hello"  # specials dropped


def test_lower_case_and_accents(bert_vocab):
    assert build_tokenizer("bert", vocab_path=bert_vocab).encode("CAFÉS") == [14, 15]
    assert build_tokenizer("bert", vocab_path=bert_vocab, do_lower_case=False).encode("CAFÉS") == [1]
    assert basic_tokenize("A\u0000b\tc中d", do_lower_case=True) == ["ab", "c", "中", "d"]


def _vocab(tmp_path: Path, tokens: list[str]) -> str:
    path = tmp_path / "v.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return str(path)


def test_char_tokenizer(tmp_path):
    tok = build_tokenizer("char", vocab_path=_vocab(tmp_path, ["<pad>", "<unk>", "<s>", "</s>", "你", "好"]))
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.encode(" 你好吗 ") == [4, 5, 1]
    assert tok.decode([2, 4, 5, 3]) == "你好"


def test_space_tokenizer_and_first_field_of_a_line(tmp_path):
    tok = build_tokenizer("space", vocab_path=_vocab(tmp_path, ["[UNK] 100", "a 5", "b 3"]))
    assert tok.encode("a b c") == [1, 2, 0] and tok.decode([1, 2]) == "a b"
    assert tok.encode("   ") == []
    assert tok.bos_id is None and tok.eos_id is None


def test_vocab_errors(tmp_path):
    with pytest.raises(TokenizerError, match="vocabulary file not found"):
        build_tokenizer("char", vocab_path=str(tmp_path / "missing.txt"))
    no_unk = build_tokenizer("char", vocab_path=_vocab(tmp_path, ["a"]))
    with pytest.raises(TokenizerError, match="no unk token"):
        no_unk.encode("b")
