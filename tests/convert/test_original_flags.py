"""The original family converters' flags: ``--layers_num``, ``--decoder_layers_num``, ``--type`` and a single
``pytorch_model.bin`` as input. Values that agree with the checkpoint are accepted (the result is the same as
without them), values that contradict it are refused before anything is written."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from scripts import convert_bert_from_huggingface_to_tencentpretrain as bert_hf_to_tp
from scripts import convert_bert_from_tencentpretrain_to_huggingface as bert_tp_to_hf
from scripts import convert_t5_from_huggingface_to_tencentpretrain as t5_hf_to_tp
from tencentpretrain.checkpoint import load_state_dict
from tests.convert.test_registry import _hf_bert, capsys_exit  # noqa: F401 (a fixture)

transformers = pytest.importorskip("transformers")


@pytest.fixture
def hf_bert_bin(tmp_path) -> str:
    """A tiny BertForPreTraining saved as one pytorch_model.bin beside its config.json."""
    model = _hf_bert(str(tmp_path / "hf"), max_shard_size="10GB")
    for name in os.listdir(tmp_path / "hf"):
        if name.endswith(".safetensors"):
            os.remove(tmp_path / "hf" / name)
    torch.save(model.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    return str(tmp_path / "hf" / "pytorch_model.bin")


def test_a_bin_file_with_the_originals_flags_converts_like_the_directory(tmp_path, hf_bert_bin, caplog):
    with caplog.at_level(logging.INFO):
        assert bert_hf_to_tp.main(["--input_model_path", hf_bert_bin, "--output_model_path",
                                   str(tmp_path / "a.bin"), "--layers_num", "2", "--type", "bert"]) == 0
    assert "--layers_num 2, --type bert: agree with" in caplog.text
    assert bert_hf_to_tp.main(["--input_model_path", os.path.dirname(hf_bert_bin), "--output_model_path",
                               str(tmp_path / "b.bin")]) == 0
    a, b = load_state_dict(str(tmp_path / "a.bin")), load_state_dict(str(tmp_path / "b.bin"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert "target.sp.linear_2.weight" in a
    # back to HF with the original's export flags
    assert bert_tp_to_hf.main(["--input_model_path", str(tmp_path / "a.bin"), "--output_model_path",
                               str(tmp_path / "back"), "--layers_num", "2", "--type", "bert"]) == 0
    assert os.path.isfile(tmp_path / "back" / "config.json")


@pytest.mark.parametrize("flags, message", [
    (["--layers_num", "12"], "--layers_num 12, but"),
    (["--type", "mlm"], "--type mlm means no next-sentence head"),
    (["--decoder_layers_num", "2"], "--decoder_layers_num 2, but"),
])
def test_contradicting_flags_are_refused(tmp_path, hf_bert_bin, capsys_exit, flags, message):  # noqa: F811
    out = str(tmp_path / "x.bin")
    code, err = capsys_exit(bert_hf_to_tp.main, ["--input_model_path", hf_bert_bin, "--output_model_path", out,
                                                 *flags])
    assert code == 2 and message in err
    assert not os.path.exists(out)
    assert bert_hf_to_tp.main(["--input_model_path", hf_bert_bin, "--output_model_path", str(tmp_path / "ok.bin")]) == 0
    code, err = capsys_exit(bert_tp_to_hf.main, ["--input_model_path", str(tmp_path / "ok.bin"), "--output_model_path",
                                                 str(tmp_path / "hf_out"), *flags])
    assert code == 2 and message in err
    assert not os.path.exists(tmp_path / "hf_out")


def test_t5_type_and_decoder_layers(tmp_path, capsys_exit):  # noqa: F811
    config = transformers.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_decoder_layers=3,
                                   num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    out = str(tmp_path / "t5.bin")
    assert t5_hf_to_tp.main(["--input_model_path", str(tmp_path / "t5"), "--output_model_path", out,
                             "--layers_num", "2", "--decoder_layers_num", "3", "--type", "t5-v1_1"]) == 0
    code, err = capsys_exit(t5_hf_to_tp.main, ["--input_model_path", str(tmp_path / "t5"), "--output_model_path",
                                               str(tmp_path / "no.bin"), "--type", "t5"])
    assert code == 2 and "--type t5 means T5's ReLU feed-forward" in err
    code, err = capsys_exit(t5_hf_to_tp.main, ["--input_model_path", str(tmp_path / "t5"), "--output_model_path",
                                               str(tmp_path / "no.bin"), "--decoder_layers_num", "2"])
    assert code == 2 and "has 3 decoder layers" in err
    assert not os.path.exists(tmp_path / "no.bin")


def test_a_bare_bin_without_config_says_what_to_do(tmp_path, hf_bert_bin, capsys_exit):  # noqa: F811
    os.remove(os.path.join(os.path.dirname(hf_bert_bin), "config.json"))
    code, err = capsys_exit(bert_hf_to_tp.main, ["--input_model_path", hf_bert_bin, "--output_model_path",
                                                 str(tmp_path / "x.bin"), "--layers_num", "2"])
    assert code == 2 and "put the config.json that came with the weights in the same directory" in err
