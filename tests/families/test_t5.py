"""T5: HF parity through the production converter (relative buckets, decoder, both FFN variants, tied head),
original key names, training, save/load, and encoder-decoder generation."""

import pytest
import torch

from tencentpretrain.checkpoint import load_checkpoint, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.families.t5 import FAMILY as T5_HF
from tencentpretrain.convert.hf_family import hf_state_to_internal, internal_state_to_hf
from tencentpretrain.layers.relative_position import relative_position_bucket
from tencentpretrain.models.model import build_model
from tests.helpers import REPO_ROOT

transformers = pytest.importorskip("transformers")

VOCAB = 157


def _hf_model(proj="gated-gelu", tie=False):
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
        feed_forward_proj=proj, tie_word_embeddings=tie, relative_attention_num_buckets=8,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    torch.manual_seed(3)
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _ours(hf):
    config, state = hf_state_to_internal(T5_HF, hf.state_dict(), hf.config.to_dict())
    model = build_model(config, init=False).eval()
    model.load_state_dict(state, strict=True)
    return model


def _seq2seq_logits(model, src, seg, tgt_in):
    memory = model.hidden_states(src, seg)
    return model.target.logits(model.decode(memory, seg, tgt_in))


@pytest.mark.parametrize("proj,tie", [("gated-gelu", False), ("relu", True)], ids=["v1_1-untied", "v1_0-tied"])
def test_logits_equal_transformers(proj, tie):
    hf = _hf_model(proj, tie)
    ours = _ours(hf)
    src = torch.randint(2, VOCAB, (2, 40))  # long enough for the logarithmic buckets
    attention = torch.ones_like(src)
    attention[1, 30:] = 0
    tgt_in = torch.randint(2, VOCAB, (2, 35))
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=attention, decoder_input_ids=tgt_in).logits
        torch.testing.assert_close(_seq2seq_logits(ours, src, attention, tgt_in), expected, atol=3e-5, rtol=1e-4)
        memory = ours.hidden_states(src, attention)  # incremental decoding with the decoder KV cache
        cache = ours.new_decoder_kv_cache(2, 40)
        pieces = [ours.target.logits(ours.decode(memory, attention, tgt_in[:, :20], cache=cache))]
        for t in range(20, 35):
            pieces.append(ours.target.logits(ours.decode(memory, attention, tgt_in[:, t : t + 1], cache=cache)))
        torch.testing.assert_close(torch.cat(pieces, 1), expected, atol=3e-5, rtol=1e-4)


def test_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 300)[None, :]
    for bidirectional in (True, False):
        expected = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
        got = relative_position_bucket(rel, bidirectional=bidirectional, buckets_num=32, max_distance=128)
        assert torch.equal(got, expected)


def test_round_trip_untied_is_bit_exact():
    hf = _hf_model()
    config, state = hf_state_to_internal(T5_HF, hf.state_dict(), hf.config.to_dict())
    hf_config, back = internal_state_to_hf(T5_HF, state, config, VOCAB)
    original = hf.state_dict()
    assert set(back) == set(original)
    for key, tensor in original.items():
        assert torch.equal(back[key], tensor), key
    assert T5_HF.config_from_hf(hf_config) == config


def test_original_key_names_and_sharing():
    config = load_model_config(f"{REPO_ROOT}/models/t5/small_config.json")
    with torch.device("meta"):
        model = build_model(config, vocab_size=VOCAB, init=False)
    keys = list(model.state_dict())
    assert "encoder.relative_pos_emb.relative_attention_bias.weight" in keys
    assert "decoder.self_pos_emb.relative_attention_bias.weight" in keys
    assert "decoder.transformer_decoder.0.context_attn.linear_layers.0.weight" in keys
    assert "decoder.transformer_decoder.5.layer_norm_3.weight" in keys and "decoder.layer_norm.weight" in keys
    assert model.tgt_embedding.word.embedding.weight is model.embedding.word.embedding.weight
    assert model.target.lm.output_layer.weight is model.embedding.word.embedding.weight


@pytest.mark.slow
def test_trains_and_saves(tmp_path):
    config = load_model_config(f"{REPO_ROOT}/models/t5/small_config.json").replace(
        emb_size=32, hidden_size=32, feedforward_size=64, heads_num=4, layers_num=2, decoder_layers_num=2,
        dropout=0.0, relative_attention_buckets_num=8,
    )
    model = build_model(config, vocab_size=40)
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, 40, (6, 12), generator=g)
    target = src.flip(1)[:, :8]  # learn to copy the reversed source
    tgt_in = torch.cat([torch.zeros(6, 1, dtype=torch.long), target[:, :-1]], 1)
    seg = torch.ones_like(src)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(src, target, seg, tgt_in=tgt_in).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    path = tmp_path / "t5.bin"
    save_checkpoint(model, str(path))
    again = build_model(config, vocab_size=40, init=False)
    load_checkpoint(again, str(path))
    with torch.no_grad():
        torch.testing.assert_close(again(src, target, seg, tgt_in=tgt_in).loss, model(src, target, seg, tgt_in=tgt_in).loss)
