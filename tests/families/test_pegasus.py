"""Pegasus (tencentpretrain/convert/families/pegasus.py): logits parity with transformers'
PegasusForConditionalGeneration both ways through the convert_pegasus_* scripts, bit-exact round trips, HF's
position table against ours (and against the original's sinusoidalpos, which differs), refused options."""

from __future__ import annotations

import os

import pytest
import torch

from scripts import convert_pegasus_from_huggingface_to_tencentpretrain as hf_to_tp
from scripts import convert_pegasus_from_tencentpretrain_to_huggingface as tp_to_hf
from tencentpretrain.checkpoint import load_state_dict, save_file
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.families.pegasus import FAMILY
from tencentpretrain.convert.hf import HfExportOptions, convert_tencentpretrain_to_hf
from tencentpretrain.convert.loading import load_model
from tencentpretrain.embeddings.pegasus_sinusoidalpos import pegasus_sinusoidal_rows
from tencentpretrain.embeddings.sinusoidalpos import POSITION_OFFSET, sinusoidal_rows
from tencentpretrain.errors import ConfigError
from tencentpretrain.models.model import build_model
from tests.helpers import REPO_ROOT

transformers = pytest.importorskip("transformers")

VOCAB = 109
POSITIONS = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")


def _hf_pegasus(path, d_model: int = 32):
    config = transformers.PegasusConfig(
        vocab_size=VOCAB, d_model=d_model, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=24, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, activation_function="relu", scale_embedding=True)
    torch.manual_seed(7)
    model = transformers.PegasusForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or (name.endswith("bias") and "embed_positions" not in name):
                p.add_(torch.randn_like(p) * 0.1)
        model.final_logits_bias.add_(torch.randn_like(model.final_logits_bias))  # a buffer: make it matter
    model.save_pretrained(path)
    return model


def _inputs():
    src = torch.randint(3, VOCAB, (2, 11))
    src[1, 8:] = 0  # right padding (Pegasus's pad id 0) in the second row
    attention = (src != 0).long()
    tgt = torch.randint(3, VOCAB, (2, 7))
    tgt[:, 0] = 0  # decoder_start_token_id
    return src, attention, tgt


def _our_logits(model, src, attention, tgt) -> torch.Tensor:
    with torch.no_grad():
        return model.target.logits(model.decode(model.hidden_states(src, attention), attention, tgt))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("width", [32, 33], ids=["even", "odd"])
def test_our_rows_are_hf_pegasus_table_and_not_the_originals(tmp_path, width):
    table = transformers.PegasusForConditionalGeneration(transformers.PegasusConfig(
        vocab_size=VOCAB, d_model=width, encoder_layers=1, decoder_layers=1, encoder_attention_heads=1,
        decoder_attention_heads=1, max_position_embeddings=64)).model.encoder.embed_positions.weight.detach()
    ours = pegasus_sinusoidal_rows(torch.arange(64), width)
    assert _max_diff(ours, table) < 1e-6
    original = sinusoidal_rows(torch.arange(64) + POSITION_OFFSET, width)  # what models/pegasus configs compute
    assert _max_diff(original, table) > 0.5


def test_logits_equal_transformers_both_ways_and_the_round_trip_is_bit_exact(tmp_path):
    hf = _hf_pegasus(tmp_path / "hf")
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "m.bin"), "--layers_num", "2", "--decoder_layers_num", "3"]) == 0
    config = load_model_config(str(tmp_path / "m_config.json"))
    assert (config.embedding, config.layernorm_positioning, config.max_seq_length) == (
        ("word", "pegasus_sinusoidalpos"), "pre", 24)
    ours = load_model(config, str(tmp_path / "m.bin")).eval()
    src, attention, tgt = _inputs()
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=attention, decoder_input_ids=tgt).logits
    assert _max_diff(_our_logits(ours, src, attention, tgt), expected) < 1e-4  # HF -> ours
    unscaled = load_model(config, str(tmp_path / "m.bin")).eval()
    unscaled.embedding.word.scale = unscaled.tgt_embedding.word.scale = None
    assert _max_diff(_our_logits(unscaled, src, attention, tgt), expected) > 1e-3  # the check can fail

    assert tp_to_hf.main(["--input_model_path", str(tmp_path / "m.bin"), "--output_model_path",
                          str(tmp_path / "back")]) == 0
    back, original = load_state_dict(str(tmp_path / "back")), hf.state_dict()
    assert set(back) == set(original)
    for key, tensor in original.items():
        if key in POSITIONS:  # HF's fixed table (numpy float64), ours computed in torch float64
            assert _max_diff(back[key], tensor) < 1e-6, key
        else:
            assert torch.equal(back[key], tensor), key
    reloaded = transformers.PegasusForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        theirs = reloaded(input_ids=src, attention_mask=attention, decoder_input_ids=tgt).logits
    assert _max_diff(theirs, _our_logits(ours, src, attention, tgt)) < 1e-4  # ours -> HF
    state = ours.state_dict()
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "back"), "--output_model_path",
                          str(tmp_path / "again.safetensors")]) == 0
    again = load_state_dict(str(tmp_path / "again.safetensors"))
    assert set(again) == set(state) and all(torch.equal(again[k], v) for k, v in state.items())


def test_greedy_seq2seq_generation_equals_transformers(tmp_path):
    from tencentpretrain.generation.seq2seq import generate_seq2seq

    hf = _hf_pegasus(tmp_path / "hf")
    ours = load_model(None, str(tmp_path / "hf")).eval()  # an HF directory, read through the family's map
    src, attention, _ = _inputs()
    expected = hf.generate(input_ids=src[:1, :8], attention_mask=attention[:1, :8], max_new_tokens=8,
                           do_sample=False, num_beams=1, eos_token_id=None, forced_eos_token_id=None)
    out = generate_seq2seq(ours, src[:1, :8], start_id=0, eos_id=None, max_new_tokens=8)
    assert out.shape == (1, 8) and out[0].tolist() == expected[0, 1:].tolist()  # HF's starts with the start id


def test_the_originals_pegasus_config_is_refused_by_the_export(tmp_path):
    original = load_model_config(os.path.join(REPO_ROOT, "models", "pegasus", "base_config.json"))
    config = original.replace(emb_size=32, hidden_size=32, feedforward_size=48, heads_num=4, layers_num=2,
                              decoder_layers_num=2, max_seq_length=24, vocab_size=VOCAB, dropout=0.0)
    torch.manual_seed(2)
    save_file(build_model(config).state_dict(), str(tmp_path / "m.bin"))
    with pytest.raises(ConfigError, match=r"embedding=\('word', 'sinusoidalpos'\) \(HF Pegasus computes "
                                          r"\('word', 'pegasus_sinusoidalpos'\)\)"):
        convert_tencentpretrain_to_hf(str(tmp_path / "m.bin"), str(tmp_path / "hf"), config,
                                      HfExportOptions(family="pegasus"))
    assert not os.path.exists(tmp_path / "hf")


@pytest.mark.parametrize(("option", "message"), [
    ({"scale_embedding": False}, "without scale_embedding"),
    ({"decoder_attention_heads": 2}, "encoder_attention_heads=4 != decoder_attention_heads=2"),
])
def test_options_pegasus_does_not_compute_are_refused(option, message):
    hf = {"model_type": "pegasus", "vocab_size": VOCAB, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
          "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 48, "decoder_ffn_dim": 48,
          "max_position_embeddings": 24, "scale_embedding": True}
    assert FAMILY.config_from_hf(hf).share_embedding
    with pytest.raises(ConfigError, match=message):
        FAMILY.config_from_hf({**hf, **option})
