"""Logits parity with transformers.LlamaForCausalLM through the production weight map."""

import pytest
import torch

from tencentpretrain.convert.families.llama import (
    hf_config_from_model_config,
    llama_hf_weight_map,
    model_config_from_hf,
    permute_for_hf_rope,
    unpermute_from_hf_rope,
)
from tencentpretrain.models.model import build_model

transformers = pytest.importorskip("transformers")

VOCAB = 49953  # odd size: catches any assumption that the vocabulary is padded to a multiple


def _random_hf_model(kv_heads: int):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv_heads, rope_theta=1e6, rms_norm_eps=1e-5, max_position_embeddings=256,
    )
    torch.manual_seed(1)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # HF zero-inits nothing that matters, but make norms non-trivial too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _ours_from_hf(hf_model):
    config = model_config_from_hf(hf_model.config.to_dict())
    ours = build_model(config, init=False).eval()
    state = llama_hf_weight_map(config).to_internal(hf_model.state_dict())
    ours.load_state_dict(state, strict=True)
    return ours


# Chinese and English ids from a LLaMA-style vocabulary, plus ids beyond 32000 (an extended vocabulary).
TOKEN_IDS = torch.tensor(
    [
        [1, 29871, 30275, 30356, 30210, 31688, 30769, 30392, 49000, 13, 40000, 2],
        [1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203],
    ]
)


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_logits_equal_transformers(kv_heads):
    hf = _random_hf_model(kv_heads)
    ours = _ours_from_hf(hf)
    assert ours.config.rope_theta == 1e6 and ours.config.kv_heads_num == kv_heads and ours.vocab_size == VOCAB
    with torch.no_grad():
        expected = hf(TOKEN_IDS).logits
        torch.testing.assert_close(ours.logits(TOKEN_IDS), expected, atol=2e-5, rtol=1e-4)
        cache = ours.new_kv_cache(2, 16)
        pieces = [ours.logits(TOKEN_IDS[:, :5], cache=cache)]
        pieces += [ours.logits(TOKEN_IDS[:, t : t + 1], cache=cache) for t in range(5, TOKEN_IDS.shape[1])]
        torch.testing.assert_close(torch.cat(pieces, 1), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_weight_map_round_trip_is_bit_exact(kv_heads):
    hf = _random_hf_model(kv_heads)
    config = model_config_from_hf(hf.config.to_dict())
    weight_map = llama_hf_weight_map(config)
    original = hf.state_dict()
    back = weight_map.to_external(weight_map.to_internal(original))
    assert set(back) == set(original)
    for key, tensor in original.items():
        assert torch.equal(back[key], tensor), key


def test_permutation_inverse_and_nontrivial():
    w = torch.randn(2 * 8, 5)
    permuted = permute_for_hf_rope(w, heads=2)
    assert not torch.equal(permuted, w)
    assert torch.equal(unpermute_from_hf_rope(permuted, heads=2), w)


def test_hf_config_round_trip():
    hf = _random_hf_model(2)
    config = model_config_from_hf(hf.config.to_dict())
    again = model_config_from_hf(hf_config_from_model_config(config, VOCAB))
    assert again == config
