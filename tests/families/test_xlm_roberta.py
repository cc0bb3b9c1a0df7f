"""XLM-RoBERTa (tencentpretrain/convert/families/xlm_roberta.py): logits parity with transformers'
XLMRobertaForMaskedLM both ways through the convert_xlmroberta_* scripts, and a bit-exact round trip."""

from __future__ import annotations

import json

import pytest
import torch

from scripts import convert_roberta_from_huggingface_to_tencentpretrain as roberta_hf_to_tp
from scripts import convert_xlmroberta_from_huggingface_to_tencentpretrain as hf_to_tp
from scripts import convert_xlmroberta_from_tencentpretrain_to_huggingface as tp_to_hf
from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.loading import load_model
from tencentpretrain.errors import ConfigError

transformers = pytest.importorskip("transformers")

VOCAB = 251  # XLM-R's real one is 250,002: fairseq's 4 specials + 250,000 SentencePiece pieces (- 2 shared)


def _hf_xlmr(path):
    config = transformers.XLMRobertaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        max_position_embeddings=34, type_vocab_size=1, pad_token_id=1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, architectures=["XLMRobertaForMaskedLM"])
    torch.manual_seed(8)
    model = transformers.XLMRobertaForMaskedLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    return model


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_logits_equal_transformers_both_ways_and_the_round_trip_is_bit_exact(tmp_path):
    hf = _hf_xlmr(tmp_path / "hf")
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "m.bin")]) == 0
    config = load_model_config(str(tmp_path / "m_config.json"))
    assert config.max_seq_length == 32  # 34 position rows, the first two unused (fairseq's offset)
    ours = load_model(config, str(tmp_path / "m.bin")).eval()
    ids = torch.randint(5, VOCAB, (2, 32))  # the longest sequence: every position row is used
    ids[1, 20:] = 1  # right padding (pad id 1) in the second row
    attention = (ids != 1).long()
    real = attention.bool()
    with torch.no_grad():
        expected = hf(ids, attention_mask=attention).logits
        assert _max_diff(ours.logits(ids, attention)[real], expected[real]) < 1e-4  # segment 1, 0 = padding

    assert tp_to_hf.main(["--input_model_path", str(tmp_path / "m.bin"), "--output_model_path",
                          str(tmp_path / "back")]) == 0
    with open(tmp_path / "back" / "config.json", encoding="utf-8") as f:
        hf_config = json.load(f)
    assert (hf_config["model_type"], hf_config["architectures"]) == ("xlm-roberta", ["XLMRobertaForMaskedLM"])
    back, original = load_state_dict(str(tmp_path / "back")), hf.state_dict()
    assert set(back) == set(original)
    assert all(torch.equal(back[k], v) for k, v in original.items() if "position_embeddings" not in k)
    pos = "roberta.embeddings.position_embeddings.weight"
    assert torch.equal(back[pos][2:], original[pos][2:]) and not back[pos][:2].any()  # unused rows: zeros
    reloaded = transformers.XLMRobertaForMaskedLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert _max_diff(reloaded(ids, attention_mask=attention).logits[real], expected[real]) < 1e-4


def test_the_roberta_script_refuses_an_xlm_roberta_directory(tmp_path):
    _hf_xlmr(tmp_path / "hf")
    with pytest.raises(ConfigError, match="holds an HF XLM-RoBERTa model .* not RoBERTa"):
        roberta_hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                               str(tmp_path / "m.bin")])
