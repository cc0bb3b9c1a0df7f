"""The composite model: TencentPretrain checkpoint keys, init, training forward, KV-cache inference."""

import os

import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.models.model import build_model
from tests.helpers import REPO_ROOT, tiny_llama_config


def original_llama_keys(layers: int) -> list[str]:
    """TencentPretrain's LLaMA state_dict keys, as its .bin files hold them (reference section 2.1)."""
    keys = ["embedding.word.embedding.weight"]
    for i in range(layers):
        p = f"encoder.transformer.{i}."
        keys += [
            p + "self_attn.linear_layers.0.weight",
            p + "self_attn.linear_layers.1.weight",
            p + "self_attn.linear_layers.2.weight",
            p + "self_attn.final_linear.weight",
            p + "feed_forward.linear_gate.weight",
            p + "feed_forward.linear_1.weight",
            p + "feed_forward.linear_2.weight",
            p + "layer_norm_1.weight",
            p + "layer_norm_2.weight",
        ]
    return keys + ["encoder.layer_norm.weight", "target.lm.output_layer.weight"]


def _meta_model(config_name: str, vocab: int = 32000):
    config = load_model_config(os.path.join(REPO_ROOT, "models", config_name))
    with torch.device("meta"):
        return build_model(config, vocab)


def test_llama_7b_state_dict_keys_equal_the_original():
    state = _meta_model("llama/7b_config.json").state_dict()
    assert list(state) == original_llama_keys(32)
    assert state["encoder.transformer.0.self_attn.linear_layers.1.weight"].shape == (4096, 4096)
    assert state["encoder.transformer.31.feed_forward.linear_2.weight"].shape == (4096, 11008)
    assert sum(t.numel() for t in state.values()) == 6_738_415_616


def test_llama2_70b_keys_and_gqa_shapes():
    state = _meta_model("llama2/70b_config.json").state_dict()
    assert list(state) == original_llama_keys(80)
    assert state["encoder.transformer.0.self_attn.linear_layers.0.weight"].shape == (8192, 8192)
    assert state["encoder.transformer.0.self_attn.linear_layers.1.weight"].shape == (1024, 8192)
    assert state["encoder.transformer.0.self_attn.linear_layers.2.weight"].shape == (1024, 8192)
    assert state["encoder.transformer.0.feed_forward.linear_gate.weight"].shape == (28672, 8192)


def test_from_scratch_init_norms_are_one_and_weights_small():
    model = build_model(tiny_llama_config(), 100)
    state = model.state_dict()
    assert torch.equal(state["encoder.layer_norm.weight"], torch.ones(64))
    assert torch.equal(state["encoder.transformer.1.layer_norm_2.weight"], torch.ones(64))
    std = state["encoder.transformer.0.feed_forward.linear_1.weight"].std().item()
    assert 0.015 < std < 0.025


def test_training_forward_scores_only_the_loss_mask():
    model = build_model(tiny_llama_config(), 100).eval()
    src = torch.randint(0, 100, (2, 8))
    tgt = torch.randint(0, 100, (2, 8))
    seg = torch.ones_like(src)
    loss_mask = torch.zeros(2, 8, dtype=torch.bool)
    loss_mask[0, 3:6] = True
    out = model(src, tgt, seg, loss_mask)
    logits = model.logits(src)
    expected = torch.nn.functional.cross_entropy(logits[loss_mask], tgt[loss_mask])
    torch.testing.assert_close(out.loss, expected)
    assert out.metrics["tokens_lm"].item() == 3


def test_right_padding_does_not_change_scored_positions():
    model = build_model(tiny_llama_config(), 100).eval()
    src = torch.randint(1, 100, (1, 6))
    padded = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], 1)
    seg = torch.tensor([[1] * 6 + [0] * 3])
    full = model.logits(padded, seg)[:, :6]
    torch.testing.assert_close(full, model.logits(src), atol=1e-5, rtol=1e-5)


def test_kv_cache_prefill_then_decode_equals_full_forward():
    model = build_model(tiny_llama_config(), 100).eval()
    src = torch.randint(0, 100, (3, 10))
    full = model.logits(src)
    cache = model.new_kv_cache(3, 16)
    steps = [model.logits(src[:, :6], cache=cache)]
    for t in range(6, 10):
        steps.append(model.logits(src[:, t : t + 1], cache=cache))
    assert cache.length == 10
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_left_padded_batch_with_cache_equals_each_row_alone():
    model = build_model(tiny_llama_config(), 100).eval()
    long, short = torch.randint(1, 100, (1, 7)), torch.randint(1, 100, (1, 4))
    pad = 7 - 4
    src = torch.cat([long, torch.cat([torch.zeros(1, pad, dtype=torch.long), short], 1)])
    seg = torch.tensor([[1] * 7, [0] * pad + [1] * 4])
    positions = (seg.cumsum(1) - 1).clamp(min=0)
    cache = model.new_kv_cache(2, 9)
    batched = model.logits(src, seg, positions=positions, cache=cache)
    torch.testing.assert_close(batched[0:1], model.logits(long), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1:2, pad:], model.logits(short), atol=1e-5, rtol=1e-5)
    # one more decode step per row
    nxt = torch.randint(1, 100, (2, 1))
    step = model.logits(nxt, positions=positions[:, -1:] + 1, cache=cache)
    torch.testing.assert_close(step[1:2], model.logits(torch.cat([short, nxt[1:]], 1))[:, -1:], atol=1e-5, rtol=1e-5)


def test_tied_weights_share_storage():
    config = tiny_llama_config(tie_weights=True)
    model = build_model(config, 50)
    assert model.target.lm.output_layer.weight is model.embedding.word.embedding.weight
