"""BLOOM (tencentpretrain/convert/families/bloom.py): logits parity with transformers' BloomForCausalLM both ways
through the convert_bloom_* scripts (padded batches: ALiBi positions from the attention mask), bit-exact round
trips, greedy generation equal to HF's generate, the original's BLOOM configs refused by the export."""

from __future__ import annotations

import os

import pytest
import torch

from scripts import convert_bloom_from_huggingface_to_tencentpretrain as hf_to_tp
from scripts import convert_bloom_from_tencentpretrain_to_huggingface as tp_to_hf
from tencentpretrain.checkpoint import load_state_dict, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.families.bloom import FAMILY, _join_qkv, _split_qkv
from tencentpretrain.convert.hf import HfExportOptions, convert_tencentpretrain_to_hf
from tencentpretrain.convert.loading import load_model
from tencentpretrain.errors import ConfigError
from tencentpretrain.generation import GenerationConfig, generate
from tests.convert.common import random_model
from tests.helpers import REPO_ROOT

transformers = pytest.importorskip("transformers")

VOCAB = 151
HEADS = 6  # not a power of two: BLOOM's extra ALiBi slopes are exercised


def _hf_bloom(path, *, tie: bool = True, std: float = 0.02, seed: int = 3):
    config = transformers.BloomConfig(vocab_size=VOCAB, hidden_size=48, n_layer=3, n_head=HEADS,
                                      tie_word_embeddings=tie, initializer_range=std, hidden_dropout=0.0,
                                      attention_dropout=0.0)
    torch.manual_seed(seed)
    model = transformers.BloomForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "ln_f" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path, max_shard_size="50KB")
    return model


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _our_logits(model, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(ids, seg=attention)  # right padding: seg 0 marks the pad slots


def test_fused_qkv_is_split_per_head():
    fused = torch.arange(12 * 5, dtype=torch.float32).reshape(12, 5)  # (heads * 3 * D, H): 2 heads, D = 2
    q, k, v = _split_qkv(fused, heads=2)  # head_dim 2: rows [q0 q0 k0 k0 v0 v0 q1 q1 k1 k1 v1 v1]
    assert torch.equal(q, fused[[0, 1, 6, 7]]) and torch.equal(k, fused[[2, 3, 8, 9]])
    assert torch.equal(v, fused[[4, 5, 10, 11]])
    assert torch.equal(_join_qkv([q, k, v], heads=2), fused)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_logits_equal_transformers_both_ways_and_round_trips_are_bit_exact(tmp_path, tie):
    hf = _hf_bloom(tmp_path / "hf", tie=tie)
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "m.bin")]) == 0
    config = load_model_config(str(tmp_path / "m_config.json"))
    assert (config.alibi_position_embedding, config.remove_embedding_layernorm, config.tie_weights) == (True, False,
                                                                                                        tie)
    ours = load_model(config, str(tmp_path / "m.bin")).eval()
    ids = torch.randint(0, VOCAB, (2, 13))
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0
    with torch.no_grad():
        expected = hf(ids, attention_mask=attention).logits
    real = attention.bool()
    assert _max_diff(_our_logits(ours, ids, attention)[real], expected[real]) < 1e-4  # HF -> ours
    left = torch.ones_like(ids)
    left[0, :5] = 0  # left padding: ALiBi positions count real tokens only, as HF's cumsum of the mask
    with torch.no_grad():
        expected_left = hf(ids, attention_mask=left).logits
    assert _max_diff(_our_logits(ours, ids, left)[left.bool()], expected_left[left.bool()]) < 1e-4
    no_alibi = load_model(config.replace(alibi_position_embedding=False), str(tmp_path / "m.bin")).eval()
    assert _max_diff(_our_logits(no_alibi, ids, attention)[real], expected[real]) > 1e-3  # the check can fail

    assert tp_to_hf.main(["--input_model_path", str(tmp_path / "m.bin"), "--output_model_path",
                          str(tmp_path / "back")]) == 0
    back, saved = load_state_dict(str(tmp_path / "back")), load_state_dict(str(tmp_path / "hf"))
    assert set(back) == set(saved) and ("lm_head.weight" in back) == (not tie)
    assert all(torch.equal(back[k], v) for k, v in saved.items())
    reloaded = transformers.BloomForCausalLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        theirs = reloaded(ids, attention_mask=attention).logits
    assert _max_diff(theirs[real], _our_logits(ours, ids, attention)[real]) < 1e-4  # ours -> HF
    state = ours.state_dict()
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "back"), "--output_model_path",
                          str(tmp_path / "again.safetensors")]) == 0
    again = load_state_dict(str(tmp_path / "again.safetensors"))
    assert set(again) == set(state) and all(torch.equal(again[k], v) for k, v in state.items())


def test_greedy_generation_equals_transformers_generate(tmp_path):
    hf = _hf_bloom(tmp_path / "hf", std=0.3)  # peaked logits: greedy is decided by clear margins
    ours = load_model(None, str(tmp_path / "hf"))  # an HF directory, read through the family's map
    prompts = [[5, 45, 100, 17, 65, 9], [5, 88]]
    expected = [hf.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                            pad_token_id=0)[0, len(p):].tolist() for p in prompts]
    done = generate(ours, None, prompts, GenerationConfig(max_new_tokens=12, stop_at_eos=False))
    assert [c.token_ids for c in done] == expected
    assert len({tuple(e) for e in expected}) == 2


def test_the_originals_bloom_config_is_refused_by_the_export(tmp_path):
    original = load_model_config(os.path.join(REPO_ROOT, "models", "bloom", "1b1_config.json"))
    config = original.replace(emb_size=48, hidden_size=48, feedforward_size=192, heads_num=HEADS, layers_num=2,
                              vocab_size=VOCAB)
    save_checkpoint(random_model(config), str(tmp_path / "m.bin"))
    with pytest.raises(ConfigError, match=r"HF BLOOM \(BloomForCausalLM\) cannot represent this config: .*"
                                          r"hidden_act='gelu' \(HF BLOOM computes 'gelu_fast'\)"):
        convert_tencentpretrain_to_hf(str(tmp_path / "m.bin"), str(tmp_path / "hf"), config,
                                      HfExportOptions(family="bloom"))
    assert not os.path.exists(tmp_path / "hf")
    hf = FAMILY.hf_config(original, original.vocab_size or 250880)
    assert FAMILY.config_from_hf(hf).layer_number_scale  # the original's key is kept (the same function)


def test_post_layernorm_residuals_are_refused():
    hf = {"model_type": "bloom", "vocab_size": VOCAB, "hidden_size": 48, "n_layer": 2, "n_head": HEADS}
    assert FAMILY.config_from_hf(hf).alibi_position_embedding
    with pytest.raises(ConfigError, match="apply_residual_connection_post_layernorm"):
        FAMILY.config_from_hf({**hf, "apply_residual_connection_post_layernorm": True})
