"""Encoder-decoder generation with the decoder KV cache equals greedy decoding by full recompute."""

import copy

import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.generation.seq2seq import generate_seq2seq
from tencentpretrain.models.model import build_model
from tencentpretrain.transforms.quantize import optimize_for_inference
from tests.helpers import REPO_ROOT


def test_cached_greedy_equals_full_recompute():
    config = load_model_config(f"{REPO_ROOT}/models/t5/small_config.json").replace(
        emb_size=32, hidden_size=32, feedforward_size=64, heads_num=4, layers_num=2, decoder_layers_num=2,
        dropout=0.0, relative_attention_buckets_num=8,
    )
    model = build_model(config, vocab_size=50).eval()
    src = torch.randint(2, 50, (2, 9))
    got = generate_seq2seq(model, src, start_id=0, eos_id=None, max_new_tokens=12)
    tgt_in = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        memory = model.hidden_states(src)
        for _ in range(12):
            nxt = model.target.logits(model.decode(memory, torch.ones_like(src), tgt_in))[:, -1].argmax(-1)
            tgt_in = torch.cat([tgt_in, nxt[:, None]], 1)
    assert torch.equal(got, tgt_in[:, 1:])


def test_inference_transforms_keep_t5_outputs():
    """optimize_for_inference fuses the decoder's self-attention but not its cross-attention (another input)."""
    config = load_model_config(f"{REPO_ROOT}/models/t5/small_config.json").replace(
        emb_size=32, hidden_size=32, feedforward_size=64, heads_num=4, layers_num=2, decoder_layers_num=2,
        dropout=0.0, relative_attention_buckets_num=8,
    )
    model = build_model(config, vocab_size=50).eval()
    fast = optimize_for_inference(copy.deepcopy(model))
    layer = fast.decoder.transformer_decoder[0]
    assert layer.self_attn.qkv is not None and layer.context_attn.qkv is None
    src = torch.randint(2, 50, (2, 9))
    torch.testing.assert_close(generate_seq2seq(fast, src, start_id=0, eos_id=None, max_new_tokens=12),
                               generate_seq2seq(model, src, start_id=0, eos_id=None, max_new_tokens=12))
