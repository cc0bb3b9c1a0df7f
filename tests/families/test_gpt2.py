"""GPT-2: HF parity through the production converter, key names, training, save/load."""

import pytest
import torch

from tencentpretrain.checkpoint import load_checkpoint, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.families.gpt2 import FAMILY as GPT2_HF
from tencentpretrain.convert.hf_family import hf_state_to_internal, internal_state_to_hf
from tencentpretrain.models.model import build_model
from tests.helpers import REPO_ROOT

transformers = pytest.importorskip("transformers")

VOCAB = 203


def _hf_model():
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64)
    torch.manual_seed(1)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial layer norms and biases
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _ours(hf):
    config, state = hf_state_to_internal(GPT2_HF, hf.state_dict(), hf.config.to_dict())
    model = build_model(config, init=False).eval()
    model.load_state_dict(state, strict=True)
    return model


def test_logits_equal_transformers():
    hf = _hf_model()
    ours = _ours(hf)
    ids = torch.randint(0, VOCAB, (2, 17))
    with torch.no_grad():
        expected = hf(ids).logits
        torch.testing.assert_close(ours.logits(ids), expected, atol=2e-5, rtol=1e-4)
        cache = ours.new_kv_cache(2, 32)  # incremental decoding through the KV cache gives the same logits
        pieces = [ours.logits(ids[:, :9], cache=cache)] + [ours.logits(ids[:, t : t + 1], cache=cache) for t in range(9, 17)]
        torch.testing.assert_close(torch.cat(pieces, 1), expected, atol=2e-5, rtol=1e-4)


def test_round_trip_is_bit_exact_and_tied():
    hf = _hf_model()
    config, state = hf_state_to_internal(GPT2_HF, hf.state_dict(), hf.config.to_dict())
    hf_config, back = internal_state_to_hf(GPT2_HF, state, config, VOCAB)
    original = hf.state_dict()
    assert set(back) == set(original)
    for key, tensor in original.items():
        assert torch.equal(back[key], tensor), key
    assert GPT2_HF.config_from_hf(hf_config) == config
    ours = _ours(hf)
    assert ours.target.lm.output_layer.weight is ours.embedding.word.embedding.weight


def test_original_key_names_of_shipped_config():
    config = load_model_config(f"{REPO_ROOT}/models/gpt2/config.json")
    with torch.device("meta"):
        keys = list(build_model(config, vocab_size=VOCAB, init=False).state_dict())
    assert keys[:2] == ["embedding.word.embedding.weight", "embedding.pos.embedding.weight"]
    layer0 = [k[len("encoder.transformer.0."):] for k in keys if k.startswith("encoder.transformer.0.")]
    assert sorted(layer0) == sorted(
        [f"self_attn.linear_layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
        + ["self_attn.final_linear.weight", "self_attn.final_linear.bias", "feed_forward.linear_1.weight",
           "feed_forward.linear_1.bias", "feed_forward.linear_2.weight", "feed_forward.linear_2.bias",
           "layer_norm_1.gamma", "layer_norm_1.beta", "layer_norm_2.gamma", "layer_norm_2.beta"]
    )
    assert keys[-3:] == ["encoder.layer_norm.gamma", "encoder.layer_norm.beta", "target.lm.output_layer.weight"]
    assert len(keys) == 2 + 16 * 12 + 3


def test_trains_and_saves_with_original_keys(tmp_path):
    config = load_model_config(f"{REPO_ROOT}/models/gpt2/config.json").replace(
        emb_size=32, hidden_size=32, feedforward_size=64, heads_num=2, layers_num=2, max_seq_length=32, dropout=0.0
    )
    model = build_model(config, vocab_size=50)
    # a learnable corpus: a repeating pattern
    seq = torch.arange(33).remainder(7).repeat(4, 1)
    src, tgt, seg = seq[:, :-1], seq[:, 1:], torch.ones(4, 32, dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(src, tgt, seg).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    path = tmp_path / "gpt2.bin"
    save_checkpoint(model, str(path))
    saved = torch.load(path)
    assert "target.lm.output_layer.weight" in saved and "encoder.transformer.1.layer_norm_2.gamma" in saved
    again = build_model(config, vocab_size=50, init=False)
    load_checkpoint(again, str(path))
    with torch.no_grad():
        torch.testing.assert_close(again(src, tgt, seg).loss, model(src, tgt, seg).loss)
