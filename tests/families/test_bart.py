"""BART (tencentpretrain/convert/families/bart.py): logits parity with transformers' BartForConditionalGeneration
both ways through the convert_bart_* scripts, bit-exact round trips, the original's BART config, refused options."""

from __future__ import annotations

import pytest
import torch

from scripts import convert_bart_from_huggingface_to_tencentpretrain as hf_to_tp
from scripts import convert_bart_from_tencentpretrain_to_huggingface as tp_to_hf
from tencentpretrain.checkpoint import load_state_dict, save_file
from tencentpretrain.config import ModelConfig, load_model_config
from tencentpretrain.convert.families.bart import FAMILY
from tencentpretrain.convert.hf import HfExportOptions, convert_tencentpretrain_to_hf
from tencentpretrain.convert.loading import load_model
from tencentpretrain.errors import ConfigError
from tencentpretrain.models.model import build_model

transformers = pytest.importorskip("transformers")

VOCAB = 113
POS = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")


def _hf_bart(path):
    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=24, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0)
    torch.manual_seed(9)
    model = transformers.BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
        model.final_logits_bias.add_(torch.randn_like(model.final_logits_bias))  # a buffer: make it matter
    model.save_pretrained(path)
    return model


def _inputs():
    src = torch.randint(4, VOCAB, (2, 11))
    src[1, 8:] = 1  # right padding (BART's pad id 1) in the second row
    attention = (src != 1).long()
    tgt = torch.randint(4, VOCAB, (2, 7))
    tgt[:, 0] = 2  # decoder_start_token_id
    return src, attention, tgt


def _our_logits(model, src, attention, tgt) -> torch.Tensor:
    seg = attention  # one segment; 0 = padding
    with torch.no_grad():
        return model.target.logits(model.decode(model.hidden_states(src, seg), seg, tgt))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_logits_equal_transformers_both_ways_and_the_round_trip_is_bit_exact(tmp_path):
    hf = _hf_bart(tmp_path / "hf")
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "m.bin")]) == 0
    config = load_model_config(str(tmp_path / "m_config.json"))
    assert (config.layers_num, config.decoder_layers_num, config.max_seq_length) == (2, 3, 24)
    ours = load_model(config, str(tmp_path / "m.bin")).eval()
    src, attention, tgt = _inputs()
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=attention, decoder_input_ids=tgt).logits
    assert _max_diff(_our_logits(ours, src, attention, tgt), expected) < 1e-4  # HF -> ours

    assert tp_to_hf.main(["--input_model_path", str(tmp_path / "m.bin"), "--output_model_path",
                          str(tmp_path / "back")]) == 0
    back, original = load_state_dict(str(tmp_path / "back")), hf.state_dict()
    assert set(back) == set(original)
    for key, tensor in original.items():
        if key in POS:  # the two rows before HF's position offset are never read: written as zeros
            assert torch.equal(back[key][2:], tensor[2:]) and not back[key][:2].any()
        else:
            assert torch.equal(back[key], tensor), key
    reloaded = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        theirs = reloaded(input_ids=src, attention_mask=attention, decoder_input_ids=tgt).logits
    assert _max_diff(theirs, _our_logits(ours, src, attention, tgt)) < 1e-4  # ours -> HF


# The model keys of the original's models/bart/base_config.json (sizes made tiny, its LayerNorm made HF's).
ORIGINAL_BART = dict(emb_size=32, feedforward_size=48, hidden_size=32, hidden_act="gelu", heads_num=4, layers_num=2,
                     decoder_layers_num=2, max_seq_length=24, dropout=0.0, embedding=("word", "pos"),
                     tgt_embedding=("word", "pos"), share_embedding=True, encoder="transformer", mask="fully_visible",
                     decoder="transformer", target=("lm",), tie_weights=True, has_lmtarget_bias=True,
                     layernorm="standard", layernorm_eps=1e-5, vocab_size=VOCAB)


def test_a_model_of_the_originals_bart_config_exports_and_computes_the_same(tmp_path):
    config = ModelConfig(**ORIGINAL_BART)
    torch.manual_seed(1)
    model = build_model(config).eval()
    save_file(model.state_dict(), str(tmp_path / "bart.bin"))
    convert_tencentpretrain_to_hf(str(tmp_path / "bart.bin"), str(tmp_path / "hf"), config,
                                  HfExportOptions(family="bart"))
    hf = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    src, attention, tgt = _inputs()
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=attention, decoder_input_ids=tgt).logits
    assert _max_diff(theirs, _our_logits(model, src, attention, tgt)) < 1e-4
    with pytest.raises(ConfigError, match=r"layernorm='normal' \(HF BART computes 'standard'\)"):
        convert_tencentpretrain_to_hf(str(tmp_path / "bart.bin"), str(tmp_path / "hf2"),
                                      config.replace(layernorm="normal", layernorm_eps=1e-6),
                                      HfExportOptions(family="bart"))


@pytest.mark.parametrize(("option", "message"), [
    ({"scale_embedding": True}, "scale_embedding"),
    ({"normalize_before": True}, "pre-norm BART variants"),
    ({"decoder_ffn_dim": 64}, "encoder_ffn_dim=48 != decoder_ffn_dim=64"),
])
def test_options_bart_does_not_compute_are_refused(option, message):
    hf = {"model_type": "bart", "vocab_size": VOCAB, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
          "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 48, "decoder_ffn_dim": 48,
          "max_position_embeddings": 24}
    assert FAMILY.config_from_hf(hf).share_embedding
    with pytest.raises(ConfigError, match=message):
        FAMILY.config_from_hf({**hf, **option})
