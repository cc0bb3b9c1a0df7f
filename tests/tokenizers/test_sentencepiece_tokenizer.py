from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import sentencepiece

from tencentpretrain.errors import TokenizerError
from tencentpretrain.registry import TOKENIZERS
from tencentpretrain.tokenizers import TokenizerConfig, build_tokenizer
from tencentpretrain.tokenizers.spm import SentencePieceTokenizer

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def _train(tmp_path: Path, **kwargs) -> str:
    spec = importlib.util.spec_from_file_location("make_tiny_spm", ASSETS / "make_tiny_spm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.train_tiny_spm(ASSETS / "tiny_spm_corpus.txt", tmp_path / "m", 700, **kwargs))


def test_registered_names():
    assert {"sentencepiece", "bert", "char", "space"} <= set(TOKENIZERS.names())


def test_special_ids_come_from_the_model_llama_layout(spm_path):
    tok = build_tokenizer("sentencepiece", spm_model_path=spm_path)
    assert (tok.vocab_size, tok.unk_id, tok.bos_id, tok.eos_id) == (700, 0, 1, 2)
    # No pad piece in the model: LLaMA's convention is the <0x00> byte piece.
    assert tok.pad_id == 3 and tok.id_to_piece(3) == "<0x00>"
    assert tok.piece_to_id("</s>") == 2 and tok.piece_to_id("no-such-piece") == tok.unk_id
    assert tok.files == (spm_path,)
    assert tok.adds_dummy_prefix


def test_encode_adds_no_specials_and_matches_sentencepiece(spm_path):
    tok = build_tokenizer(spm_model_path=spm_path)
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
    text = "北京是中国的首都。Hello 123"
    assert tok.encode(text) == sp.encode(text)
    assert tok.bos_id not in tok.encode(text) and tok.eos_id not in tok.encode(text)
    assert tok.encode_batch([text, "你好"]) == [sp.encode(text), sp.encode("你好")]


@pytest.mark.parametrize("text", ["北京是中国的首都。", "魑魅魍魉 rare characters", "a  b\nc\t😀", "2024-01-15"])
def test_byte_fallback_round_trip(spm_path, text):
    tok = build_tokenizer(spm_model_path=spm_path)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode([tok.bos_id, *ids, tok.eos_id]) == text  # specials are dropped


def test_rare_characters_use_byte_pieces(spm_path):
    tok = build_tokenizer(spm_model_path=spm_path)
    ids = tok.encode("魑")
    assert [tok.id_to_piece(i) for i in ids if tok.is_byte(i)] == ["<0xE9>", "<0xAD>", "<0x91>"]


def test_pad_piece_in_model_wins(tmp_path):
    tok = SentencePieceTokenizer(_train(tmp_path, with_pad=True))
    assert tok.pad_id == 3 and tok.id_to_piece(3) == "<pad>"


def test_without_pad_or_byte_pieces_pad_is_unk(tmp_path):
    path = str(tmp_path / "plain")
    sentencepiece.SentencePieceTrainer.train(
        input=str(ASSETS / "tiny_spm_corpus.txt"), model_prefix=path, vocab_size=600, model_type="bpe",
        character_coverage=1.0, minloglevel=2, num_threads=1,
    )
    tok = SentencePieceTokenizer(path + ".model")
    assert tok.pad_id == tok.unk_id == 0


def test_bert_with_spm_model_means_sentencepiece(spm_path):
    assert TokenizerConfig(tokenizer="bert", spm_model_path=spm_path).name == "sentencepiece"
    assert TokenizerConfig().name == "bert"
    assert isinstance(build_tokenizer(TokenizerConfig(spm_model_path=spm_path)), SentencePieceTokenizer)


def test_missing_and_bad_model_files(tmp_path):
    with pytest.raises(TokenizerError, match=r"nope\.model: SentencePiece model not found"):
        build_tokenizer(spm_model_path=str(tmp_path / "nope.model"))
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        build_tokenizer(spm_model_path=str(bad))
    with pytest.raises(TokenizerError, match="--vocab_path"):
        build_tokenizer(TokenizerConfig())
