"""scripts/generate_seq2seq.py and the seq2seq beam search: a tiny BART built in transformers and converted with
our converter decodes to the same token ids as transformers' generate() (greedy and beam search, several length
penalties and early-stopping modes); the script writes the original's format atomically; bad input is one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from scripts import convert_bart_from_huggingface_to_tencentpretrain as hf_to_tp
from scripts import generate_seq2seq
from tencentpretrain.checkpoint import save_file
from tencentpretrain.config import load_model_config, save_model_config
from tencentpretrain.convert.loading import load_model
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.generation.seq2seq import BeamOptions, beam_search_seq2seq
from tencentpretrain.generation.seq2seq import generate_seq2seq as greedy
from tencentpretrain.models.model import build_model
from tests.helpers import REPO_ROOT

transformers = pytest.importorskip("transformers")

VOCAB = 40  # small, so that eos (id 2) is often among the beams and finished hypotheses compete
BOS, PAD, EOS = 0, 1, 2


@pytest.fixture(scope="module")
def bart(tmp_path_factory):
    """(HF model, our converted model, directory) of one tiny random BART."""
    path = tmp_path_factory.mktemp("bart")
    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=40, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, bos_token_id=BOS, pad_token_id=PAD, eos_token_id=EOS,
        decoder_start_token_id=BOS, forced_bos_token_id=None, forced_eos_token_id=None)
    torch.manual_seed(2)
    hf = transformers.BartForConditionalGeneration(config).eval()
    with torch.no_grad():  # chosen so that beams end at 1, 6 and 16 tokens and the length penalty picks one
        hf.final_logits_bias[0, EOS] = 2.0
        for p in hf.parameters():
            p.mul_(2.0)
    hf.save_pretrained(path / "hf")
    assert hf_to_tp.main(["--input_model_path", str(path / "hf"), "--output_model_path", str(path / "m.bin")]) == 0
    ours = load_model(load_model_config(str(path / "m_config.json")), str(path / "m.bin")).eval()
    return hf, ours, path


def _hf_generate(hf, src: torch.Tensor, max_new: int, **kwargs) -> list[int]:
    out = hf.generate(input_ids=src, attention_mask=torch.ones_like(src), max_new_tokens=max_new, min_length=0,
                      do_sample=False, no_repeat_ngram_size=0, repetition_penalty=1.0, **kwargs)
    ids = out[0].tolist()
    return ids[: ids.index(EOS) + 1] if EOS in ids else ids  # after eos HF pads


SOURCES = [[BOS, 5, 9, 17, 3, 22, 30, EOS], [BOS, 11, 11, 8, EOS], [BOS, *range(4, 36), EOS]]


@pytest.mark.parametrize("src", SOURCES)
def test_greedy_equals_transformers(bart, src):
    hf, ours, _ = bart
    src = torch.tensor([src])
    expected = _hf_generate(hf, src, 20, num_beams=1)
    got = greedy(ours, src, start_id=BOS, eos_id=EOS, max_new_tokens=20)[0].tolist()
    got = got[: got.index(EOS) + 1] if EOS in got else got
    assert [BOS, *got] == expected


@pytest.mark.parametrize("src", SOURCES)
@pytest.mark.parametrize(("width", "length_penalty", "early_stopping"),
                         [(4, 1.0, False), (3, 0.0, True), (5, 2.0, "never"), (2, -1.0, False), (4, 1.5, False),
                          (4, 0.5, True), (3, 1.0, "never")])
def test_beam_search_equals_transformers(bart, src, width, length_penalty, early_stopping):
    hf, ours, _ = bart
    src = torch.tensor([src])
    expected = _hf_generate(hf, src, 16, num_beams=width, length_penalty=length_penalty,
                            early_stopping=early_stopping)
    options = BeamOptions(width=width, length_penalty=length_penalty, early_stopping=early_stopping)
    got = beam_search_seq2seq(ours, src, start_id=BOS, eos_id=EOS, max_new_tokens=16, options=options)
    assert [BOS, *got] == expected


def test_the_model_makes_beam_search_matter(bart):
    """The parity above would hold trivially if beams and the length penalty never changed the answer."""
    _, ours, _ = bart
    src = torch.tensor([SOURCES[0]])
    outputs = {penalty: beam_search_seq2seq(ours, src, start_id=BOS, eos_id=EOS, max_new_tokens=16,
                                            options=BeamOptions(width=4, length_penalty=penalty))
               for penalty in (-1.0, 1.0, 2.0)}
    assert sorted(len(ids) for ids in outputs.values()) == [1, 6, 16]
    one = greedy(ours, src, start_id=BOS, eos_id=EOS, max_new_tokens=16)[0].tolist()
    assert outputs[1.0] != one[: one.index(EOS) + 1]


def _vocab(path) -> str:
    """A space-tokenizer vocabulary whose ids are the tiny BART's: <s> <pad> </s> <unk> w4 w5 ..."""
    tokens = ["<s>", "<pad>", "</s>", "<unk>", *(f"w{i}" for i in range(4, VOCAB))]
    (path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return str(path / "vocab.txt")


def _script_args(path, *extra: str) -> list[str]:
    return ["--load_model_path", str(path / "m.bin"), "--config_path", str(path / "m_config.json"),
            "--tokenizer", "space", "--vocab_path", _vocab(path), "--test_path", str(path / "in.txt"),
            "--prediction_path", str(path / "out.txt"), *extra]


def test_script_writes_the_originals_format_with_beam_search_and_greedy(bart):
    hf, _, path = bart
    (path / "in.txt").write_text("w5 w9 w17 w3\n\nw11 w11 w8\n", encoding="utf-8")
    expected_lines = []
    for words in ("w5 w9 w17 w3", "w11 w11 w8"):
        ids = [int(w[1:]) for w in words.split()]
        expected = _hf_generate(hf, torch.tensor([[BOS, *ids, EOS]]), 11, num_beams=3)
        expected_lines.append(words + "\n" + "".join(("<s>", "<pad>", "</s>", "<unk>")[i] if i < 4 else f"w{i}"
                                                      for i in expected))
    generate_seq2seq.main(_script_args(path, "--tgt_seq_length", "12", "--beam_width", "3"))
    assert (path / "out.txt").read_text(encoding="utf-8") == "\n\n".join(expected_lines)

    generate_seq2seq.main(_script_args(path, "--tgt_seq_length", "12", "--temperature", "0"))
    first = _hf_generate(hf, torch.tensor([[BOS, 5, 9, 17, 3, EOS]]), 11, num_beams=1)
    assert (path / "out.txt").read_text(encoding="utf-8").split("\n")[1] == "".join(
        ("<s>", "<pad>", "</s>", "<unk>")[i] if i < 4 else f"w{i}" for i in first)


def test_sampling_is_reproducible_with_a_seed(bart):
    _, _, path = bart
    (path / "in.txt").write_text("w5 w9 w17 w3\n", encoding="utf-8")
    outputs = []
    for _ in range(2):
        generate_seq2seq.main(_script_args(path, "--tgt_seq_length", "10", "--seed", "7", "--top_k", "5"))
        outputs.append((path / "out.txt").read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1] and outputs[0].startswith("w5 w9 w17 w3\n<s>")


def test_bad_input_is_an_error_and_keeps_the_old_output(bart):
    _, _, path = bart
    (path / "out.txt").write_text("old", encoding="utf-8")
    (path / "in.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(Exception, match="no prompt"):
        generate_seq2seq.main(_script_args(path))
    (path / "in.txt").write_text("w5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="--beam_width must be >= 1"):
        generate_seq2seq.main(_script_args(path, "--beam_width", "0"))
    with pytest.raises(ConfigError, match="no decoder"):
        generate_seq2seq.main(_script_args(path, "--config_path", f"{REPO_ROOT}/models/bert/base_config.json"))
    assert (path / "out.txt").read_text(encoding="utf-8") == "old"
    assert [p.name for p in path.iterdir() if p.name.startswith(".out.txt")] == []


@pytest.mark.slow
def test_the_script_reports_bad_input_in_one_line(bart, tmp_path):
    _, _, path = bart
    (path / "in.txt").write_text("w5\n", encoding="utf-8")
    result = subprocess.run([sys.executable, f"{REPO_ROOT}/scripts/generate_seq2seq.py",
                             *_script_args(path, "--tgt_seq_length", "1")], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--tgt_seq_length (1)" in result.stderr


def test_a_model_with_its_own_target_vocabulary(bart, tmp_path):
    """mt data built with --tgt_vocab_path gives the decoder side its own vocabulary (Model's tgt_vocab_size):
    --tgt_vocab_path loads such a model strictly and writes pieces of that vocabulary."""
    _, _, path = bart
    config = load_model_config(str(path / "m_config.json")).replace(share_embedding=False, vocab_size=None)
    torch.manual_seed(5)
    model = build_model(config, VOCAB, tgt_vocab_size=12).eval()
    save_file(model.state_dict(), str(tmp_path / "mt.bin"))
    save_model_config(config, tmp_path / "mt_config.json")
    target_pieces = ["<s>", "<pad>", "</s>", "<unk>", *(f"t{i}" for i in range(4, 12))]
    (tmp_path / "tgt_vocab.txt").write_text("\n".join(target_pieces) + "\n", encoding="utf-8")
    (path / "in.txt").write_text("w5 w9 w17\n", encoding="utf-8")
    args = _script_args(path, "--tgt_seq_length", "9", "--temperature", "0", "--tgt_vocab_path",
                        str(tmp_path / "tgt_vocab.txt"))
    args[1], args[3] = str(tmp_path / "mt.bin"), str(tmp_path / "mt_config.json")
    generate_seq2seq.main(args)
    ids = greedy(model, torch.tensor([[BOS, 5, 9, 17, EOS]]), start_id=BOS, eos_id=EOS, max_new_tokens=8)[0].tolist()
    ids = ids[: ids.index(EOS) + 1] if EOS in ids else ids
    expected = "".join(target_pieces[i] for i in [BOS, *ids])
    assert (path / "out.txt").read_text(encoding="utf-8") == "w5 w9 w17\n" + expected
    with pytest.raises(CheckpointError):  # without the target vocabulary the decoder's shapes do not fit
        generate_seq2seq.main(_script_args(path)[:1] + [str(tmp_path / "mt.bin"), "--config_path",
                              str(tmp_path / "mt_config.json"), *_script_args(path)[4:]])
