"""BERT: HF parity (MLM and pre-training heads) through the production converter, keys, training, save/load."""

import pytest
import torch

from tencentpretrain.checkpoint import load_checkpoint, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.families.bert import FAMILY as BERT_HF
from tencentpretrain.convert.hf_family import hf_state_to_internal, internal_state_to_hf
from tencentpretrain.models.model import build_model
from tests.helpers import REPO_ROOT

transformers = pytest.importorskip("transformers")

VOCAB = 211


def _hf_model(cls):
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        max_position_embeddings=64, architectures=[cls.__name__],
    )
    torch.manual_seed(2)
    model = cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _ours(hf):
    config, state = hf_state_to_internal(BERT_HF, hf.state_dict(), hf.config.to_dict())
    model = build_model(config, init=False).eval()
    model.load_state_dict(state, strict=True)
    return model


def _inputs():
    ids = torch.randint(5, VOCAB, (2, 13))
    types = torch.tensor([[0] * 7 + [1] * 6, [0] * 9 + [1] * 4])
    attention = torch.ones_like(ids)
    attention[1, 10:] = 0  # right padding in the second row
    seg = torch.where(attention.bool(), types + 1, 0)  # ours: segment = token type + 1, 0 = padding
    return ids, types, attention, seg


def test_masked_lm_logits_equal_transformers():
    hf = _hf_model(transformers.BertForMaskedLM)
    ours = _ours(hf)
    assert ours.config.target == ("mlm",) and ours.config.layernorm == "standard"
    ids, types, attention, seg = _inputs()
    with torch.no_grad():
        expected = hf(ids, attention_mask=attention, token_type_ids=types).logits
        got = ours.logits(ids, seg)
    real = attention.bool()
    torch.testing.assert_close(got[real], expected[real], atol=2e-5, rtol=1e-4)


def test_pretraining_heads_equal_transformers():
    hf = _hf_model(transformers.BertForPreTraining)
    ours = _ours(hf)
    assert ours.config.target == ("mlm", "sp")
    ids, types, attention, seg = _inputs()
    with torch.no_grad():
        out = hf(ids, attention_mask=attention, token_type_ids=types)
        hidden = ours.hidden_states(ids, seg)
        torch.testing.assert_close(ours.target.mlm.logits(hidden)[attention.bool()],
                                   out.prediction_logits[attention.bool()], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(ours.target.sp.pair_logits(hidden), out.seq_relationship_logits,
                                   atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cls_name", ["BertForMaskedLM", "BertForPreTraining"])
def test_round_trip_is_bit_exact(cls_name):
    hf = _hf_model(getattr(transformers, cls_name))
    config, state = hf_state_to_internal(BERT_HF, hf.state_dict(), hf.config.to_dict())
    assert torch.equal(state["embedding.seg.embedding.weight"][0], torch.zeros(64))
    hf_config, back = internal_state_to_hf(BERT_HF, state, config, VOCAB)
    original = hf.state_dict()
    assert set(back) == set(original)
    for key, tensor in original.items():
        assert torch.equal(back[key], tensor), key
    assert BERT_HF.config_from_hf(hf_config) == config


def test_original_key_names_of_shipped_config():
    config = load_model_config(f"{REPO_ROOT}/models/bert/base_config.json")
    assert config.layernorm == "normal"  # the original's configs keep the original's LayerNorm
    with torch.device("meta"):
        keys = list(build_model(config, vocab_size=VOCAB, init=False).state_dict())
    assert keys[:5] == ["embedding.word.embedding.weight", "embedding.pos.embedding.weight",
                        "embedding.seg.embedding.weight", "embedding.layer_norm.gamma", "embedding.layer_norm.beta"]
    assert keys[-10:] == [
        "target.mlm.linear_1.weight", "target.mlm.linear_1.bias", "target.mlm.layer_norm.gamma",
        "target.mlm.layer_norm.beta", "target.mlm.linear_2.weight", "target.mlm.linear_2.bias",
        "target.sp.linear_1.weight", "target.sp.linear_1.bias", "target.sp.linear_2.weight", "target.sp.linear_2.bias",
    ]
    assert "encoder.layer_norm.gamma" not in keys  # post-norm: no final layer norm
    assert len(keys) == 5 + 16 * 12 + 10


def test_trains_mlm_and_sp_and_saves_with_original_keys(tmp_path):
    config = load_model_config(f"{REPO_ROOT}/models/bert/tiny_config.json").replace(dropout=0.0)
    model = build_model(config, vocab_size=60)
    assert model.target.mlm.linear_2.weight is model.embedding.word.embedding.weight
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(5, 60, (8, 16), generator=generator)
    seg = torch.cat([torch.ones(8, 8, dtype=torch.long), 2 * torch.ones(8, 8, dtype=torch.long)], 1)
    masked = torch.rand(8, 16, generator=generator) < 0.15
    masked[:, 3] = True
    inputs = src.masked_fill(masked, 4)  # 4 = [MASK]
    is_next = torch.randint(0, 2, (8,), generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(inputs, {"mlm": src, "sp": is_next}, seg, masked)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert set(out.metrics) >= {"loss_mlm", "correct_mlm", "tokens_mlm", "loss_sp", "correct_sp"}
    assert losses[-1] < 0.5 * losses[0]
    path = tmp_path / "bert.bin"
    save_checkpoint(model, str(path))
    saved = torch.load(path)
    assert {"target.mlm.layer_norm.gamma", "target.sp.linear_2.bias", "embedding.layer_norm.beta"} <= set(saved)
    again = build_model(config, vocab_size=60, init=False).eval()
    load_checkpoint(again, str(path))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(again.logits(inputs, seg), model.logits(inputs, seg))
