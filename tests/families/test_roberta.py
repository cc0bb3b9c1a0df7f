"""RoBERTa: HF RobertaForMaskedLM parity through the production converter, and a bit-exact round trip."""

import pytest
import torch

from tencentpretrain.convert.families.roberta import FAMILY as ROBERTA_HF
from tencentpretrain.convert.hf_family import hf_state_to_internal, internal_state_to_hf
from tencentpretrain.models.model import build_model

transformers = pytest.importorskip("transformers")

VOCAB = 211


def _hf_model():
    config = transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        max_position_embeddings=34, type_vocab_size=1, pad_token_id=1, architectures=["RobertaForMaskedLM"],
    )
    torch.manual_seed(4)
    model = transformers.RobertaForMaskedLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _ours(hf):
    config, state = hf_state_to_internal(ROBERTA_HF, hf.state_dict(), hf.config.to_dict())
    model = build_model(config, init=False).eval()
    model.load_state_dict(state, strict=True)
    return model


def test_masked_lm_logits_equal_transformers():
    hf = _hf_model()
    ours = _ours(hf)
    assert ours.config.max_seq_length == 32 and ours.config.layernorm == "standard"
    ids = torch.randint(5, VOCAB, (2, 32))  # the longest sequence: every position row is used
    ids[1, 20:] = 1  # right padding (RoBERTa's pad id) in the second row
    attention = (ids != 1).long()
    seg = attention  # one segment; 0 = padding
    with torch.no_grad():
        expected = hf(ids, attention_mask=attention).logits
        got = ours.logits(ids, seg)
        pair = ours.logits(ids, torch.where(attention.bool(), torch.tensor(2), 0))  # segment B = segment A
    real = attention.bool()
    torch.testing.assert_close(got[real], expected[real], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(pair[real], expected[real], atol=2e-5, rtol=1e-4)


def test_round_trip_is_bit_exact():
    ours = _ours(_hf_model())
    hf_config, hf_state = internal_state_to_hf(ROBERTA_HF, ours.state_dict(), ours.config, VOCAB)
    assert hf_config["max_position_embeddings"] == 34 and hf_state["lm_head.bias"] is not None
    reloaded = transformers.RobertaForMaskedLM(transformers.RobertaConfig(**hf_config)).eval()
    reloaded.load_state_dict(hf_state, strict=True)
    config, back = hf_state_to_internal(ROBERTA_HF, reloaded.state_dict(), reloaded.config.to_dict())
    assert config == ours.config
    for key, tensor in ours.state_dict().items():
        assert torch.equal(back[key], tensor), key
