"""``bpe``, ``xlmroberta`` and ``hfpretrained`` give the ids and text of transformers' own tokenizers, built from
tiny files trained here (a byte-level BPE by the ``tokenizers`` package, a SentencePiece model by sentencepiece)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tencentpretrain.errors import TokenizerError
from tencentpretrain.tokenizers import build_tokenizer

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CORPUS = [
    "Hello world, 你好世界! 🙂 emoji 😀 and more text here.",
    "中文和English混合的句子，还有数字 123 和 emoji 🎉。",
    "The quick brown fox jumps over the lazy dog's tail 狐狸 isn't it?",
    "  spaces\tand\nnewlines   matter for byte-level BPE 🚀🚀",
] * 10
SAMPLES = [
    "Hello 你好 🙂 world 中文 and English",
    "It's 2024, 数字 123 的 fox 🎉🎉 isn't lazy.",
    "  leading and trailing spaces  \n next line\t tab",
    "unseen: Ωmega ☃ 𝔘𝔫𝔦 ü",
]


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("gpt2")
    trainer = tokenizers.ByteLevelBPETokenizer()
    trainer.train_from_iterator(CORPUS, vocab_size=400, min_frequency=2, special_tokens=["<|endoftext|>"],
                                show_progress=False)
    trainer.save_model(str(directory))  # vocab.json + merges.txt
    return directory


def _hf_gpt2(directory: Path):
    return transformers.GPT2Tokenizer.from_pretrained(str(directory))


def test_bpe_matches_gpt2_tokenizer(gpt2_files):
    ours = build_tokenizer("bpe", vocab_path=str(gpt2_files / "vocab.json"), merges_path=str(gpt2_files / "merges.txt"))
    hf = _hf_gpt2(gpt2_files)
    assert ours.vocab_size == len(hf)
    assert ours.bos_id == ours.eos_id == ours.unk_id == hf.eos_token_id
    for text in SAMPLES:
        ids = ours.encode(text)
        assert ids == hf.encode(text, add_special_tokens=False), text
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True) == text
    mixed = ours.encode(SAMPLES[0]) + [ours.eos_id] + ours.encode(SAMPLES[1])
    assert ours.decode(mixed) == hf.decode(mixed, skip_special_tokens=True)


def test_bpe_reads_the_originals_text_vocabulary(gpt2_files, tmp_path):
    """models/huggingface_gpt2_vocab.txt form: one token per line, id = line number."""
    token_to_id = json.loads((gpt2_files / "vocab.json").read_text(encoding="utf-8"))
    text_vocab = tmp_path / "vocab.txt"
    text_vocab.write_text("".join(t + "\n" for t in sorted(token_to_id, key=token_to_id.get)), encoding="utf-8")
    from_json = build_tokenizer("bpe", vocab_path=str(gpt2_files / "vocab.json"),
                                merges_path=str(gpt2_files / "merges.txt"))
    from_text = build_tokenizer("bpe", vocab_path=str(text_vocab), merges_path=str(gpt2_files / "merges.txt"))
    for text in SAMPLES:
        assert from_text.encode(text) == from_json.encode(text)


def test_bpe_errors_name_the_flag(gpt2_files, tmp_path):
    with pytest.raises(TokenizerError, match="--merges_path"):
        build_tokenizer("bpe", vocab_path=str(gpt2_files / "vocab.json"))
    bad = tmp_path / "merges.txt"
    bad.write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"merges.txt:2: a merge is two symbols"):
        build_tokenizer("bpe", vocab_path=str(gpt2_files / "vocab.json"), merges_path=str(bad))


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory) -> Path:
    """A SentencePiece model laid out as XLM-R's (<unk> <s> </s> at ids 0-2, no pad)."""
    sentencepiece = pytest.importorskip("sentencepiece")
    directory = tmp_path_factory.mktemp("xlmr")
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=100, character_coverage=1.0,
        model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    (directory / "sentencepiece.bpe.model").write_bytes(model.getvalue())
    return directory


def test_xlmroberta_matches_hf_with_the_fairseq_offset(xlmr_dir):
    import sentencepiece

    ours = build_tokenizer("xlmroberta", spm_model_path=str(xlmr_dir / "sentencepiece.bpe.model"))
    hf = transformers.XLMRobertaTokenizer.from_pretrained(str(xlmr_dir))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(xlmr_dir / "sentencepiece.bpe.model"))
    assert ours.vocab_size == len(hf) == sp.get_piece_size() + 2
    assert (ours.bos_id, ours.pad_id, ours.eos_id, ours.unk_id, ours.mask_id) == (0, 1, 2, 3, len(hf) - 1)
    assert ours.mask_id == hf.mask_token_id
    for text in SAMPLES:
        ids = ours.encode(text)
        assert ids == hf.encode(text, add_special_tokens=False), text
        # every piece sits at its SentencePiece id + 1, an unknown one at <unk> = 3
        assert ids == [i + 1 if i != sp.unk_id() else 3 for i in sp.encode(text)]
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True), text
    assert 3 in ours.encode(SAMPLES[3])  # the unseen characters are unknown: the test covers that path
    piece = sp.id_to_piece(10)
    assert ours.piece_to_id(piece) == 11 == hf.convert_tokens_to_ids(piece) and ours.id_to_piece(11) == piece


def test_hfpretrained_is_autotokenizer(gpt2_files, tmp_path):
    saved = tmp_path / "saved"
    _hf_gpt2(gpt2_files).save_pretrained(str(saved))
    ours = build_tokenizer("hfpretrained", vocab_path=str(saved))
    reference = transformers.AutoTokenizer.from_pretrained(str(saved))
    assert ours.vocab_size == len(reference)
    assert ours.eos_id == reference.eos_token_id
    for text in SAMPLES:
        ids = ours.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False)
        assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=True) == text
    assert any(path.endswith("tokenizer.json") for path in ours.files)


def test_hfpretrained_needs_a_local_directory(tmp_path):
    with pytest.raises(TokenizerError, match="local directory"):
        build_tokenizer("hfpretrained", vocab_path=str(tmp_path / "gpt2"))
    with pytest.raises(TokenizerError, match="not a saved HF tokenizer"):
        build_tokenizer("hfpretrained", vocab_path=str(tmp_path))


REPO = Path(__file__).resolve().parents[2]


def test_shipped_gpt2_files_match_gpt2_tokenizer():
    """models/huggingface_gpt2_{vocab,merges}.txt (RoBERTa's id order, one token per line) through ``bpe`` and
    through transformers' GPT2Tokenizer built from the same two files."""
    from tencentpretrain.tokenizers.vocab import load_vocab

    vocab_path = REPO / "models" / "huggingface_gpt2_vocab.txt"
    merges_path = REPO / "models" / "huggingface_gpt2_merges.txt"
    ours = build_tokenizer("bpe", vocab_path=str(vocab_path), merges_path=str(merges_path))
    vocab = {token: i for i, token in enumerate(load_vocab(str(vocab_path)))}
    merges = [tuple(line.split(" ")) for line in merges_path.read_text(encoding="utf-8").split("\n")[1:] if line]
    hf = transformers.GPT2Tokenizer(vocab=vocab, merges=merges)
    assert (ours.vocab_size, ours.bos_id, ours.pad_id, ours.eos_id, ours.unk_id) == (50265, 0, 1, 2, 3)
    assert ours.encode(" the") == [5] and ours.encode("Hello") == [31414]
    for text in SAMPLES:
        ids = ours.encode(text)
        assert ids == hf.encode(text, add_special_tokens=False), text
        assert ours.decode(ids) == text


def test_xlmroberta_follows_the_originals_rule_for_a_fairseq_layout_model(tmp_path):
    """A SentencePiece model that already holds <s> <pad> </s> <unk> at ids 0-3 (the layout fairseq writes)
    keeps its ids; only <mask> is appended, as the original's list rebuilding gives."""
    sentencepiece = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=100, character_coverage=1.0,
        bos_id=0, pad_id=1, eos_id=2, unk_id=3, hard_vocab_limit=False, minloglevel=2,
    )
    (tmp_path / "m.model").write_bytes(model.getvalue())
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    ours = build_tokenizer("xlmroberta", spm_model_path=str(tmp_path / "m.model"))
    assert ours.vocab_size == sp.get_piece_size() + 1 and ours.id_to_piece(ours.mask_id) == "<mask>"
    for text in SAMPLES:
        assert ours.encode(text) == sp.encode(text)


@pytest.mark.slow  # two subprocesses: preprocess.py and pretrain.py
def test_preprocess_and_pretrain_with_the_shipped_gpt2_files(tmp_path):
    """The original's GPT-2 command shape: --tokenizer bpe --vocab_path ... --merges_path ... through preprocess
    and pretrain; the checkpoint has a row per vocabulary entry and reloads strictly."""
    import subprocess
    import sys

    from tencentpretrain.config import model_config_from_dict, read_json
    from tencentpretrain.convert.loading import load_model

    tokenizer_flags = ["--tokenizer", "bpe", "--vocab_path", str(REPO / "models" / "huggingface_gpt2_vocab.txt"),
                       "--merges_path", str(REPO / "models" / "huggingface_gpt2_merges.txt")]
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    config = read_json(REPO / "models" / "gpt2" / "config.json")
    config.update(emb_size=32, hidden_size=32, feedforward_size=64, heads_num=2, layers_num=1, max_seq_length=64)
    (tmp_path / "tiny.json").write_text(json.dumps(config), encoding="utf-8")
    commands = [
        [str(REPO / "preprocess.py"), "--corpus_path", str(tmp_path / "corpus.txt"), "--dataset_path",
         str(tmp_path / "ds"), "--data_processor", "lm", "--seq_length", "32", *tokenizer_flags],
        [str(REPO / "pretrain.py"), "--dataset_path", str(tmp_path / "ds"),
         "--config_path", str(tmp_path / "tiny.json"), "--output_model_path", str(tmp_path / "m.bin"), "--total_steps", "2", "--batch_size", "2",
         "--report_steps", "1", *tokenizer_flags],
    ]
    for command in commands:
        result = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
    model = load_model(model_config_from_dict(config, "tiny.json"), str(tmp_path / "m.bin"), vocab_size=50265)
    assert model.embedding.word.embedding.weight.shape == (50265, 32)
