"""Mistral, the family added by one file (tencentpretrain/convert/families/mistral.py): logits parity with
transformers' MistralForCausalLM through the generic scripts, a bit-exact round trip, the window cap, the config."""

import os

import pytest
import torch

from scripts import convert_from_huggingface_to_tencentpretrain as hf_to_tp
from scripts import convert_from_tencentpretrain_to_huggingface as tp_to_hf
from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.families.mistral import FAMILY
from tencentpretrain.convert.loading import load_model
from tencentpretrain.models.model import build_model
from tests.helpers import REPO_ROOT

transformers = pytest.importorskip("transformers")

VOCAB = 101


def _hf_mistral(path, **overrides):
    config = transformers.MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        sliding_window=None, rms_norm_eps=1e-5, **overrides)
    torch.manual_seed(4)
    model = transformers.MistralForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path, max_shard_size="100KB")
    return model


def test_logits_equal_transformers_and_the_round_trip_is_bit_exact(tmp_path):
    hf = _hf_mistral(tmp_path / "hf")
    ours = load_model(None, str(tmp_path / "hf"))
    ids = torch.randint(0, VOCAB, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(ids), hf(ids).logits, atol=2e-5, rtol=1e-4)
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "m.bin")]) == 0
    assert tp_to_hf.main(["--model_type", "mistral", "--input_model_path", str(tmp_path / "m.bin"),
                          "--output_model_path", str(tmp_path / "back")]) == 0
    back, original = load_state_dict(str(tmp_path / "back")), hf.state_dict()
    assert set(back) == set(original)
    assert all(torch.equal(back[k], v) for k, v in original.items())
    reloaded = transformers.MistralForCausalLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, hf(ids).logits, rtol=0, atol=0)


def test_the_context_is_capped_at_the_sliding_window():
    base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, model_type="mistral")
    assert FAMILY.config_from_hf({**base, "sliding_window": 16}).max_seq_length == 16
    assert FAMILY.config_from_hf({**base, "sliding_window": None}).max_seq_length == 64


def test_shipped_config_builds_with_llama_keys():
    config = load_model_config(os.path.join(REPO_ROOT, "models", "mistral", "7b_config.json"))
    with torch.device("meta"):
        model = build_model(config, init=False)
    assert sum(p.numel() for p in model.parameters()) == 7_241_732_096  # Mistral-7B's parameter count
    assert FAMILY.hf_config(config, 32000)["num_key_value_heads"] == 8
