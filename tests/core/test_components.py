"""The components added for the original's remaining text models, on their own: ALiBi against transformers'
BLOOM and through the KV cache, sinusoidal positions through incremental decoding, the dual model's keys and
ties, and the config rules that go with them (the ``prefix`` mask alias, head arithmetic only where there is
attention, required keys)."""

from __future__ import annotations

import pytest
import torch

from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.layers.alibi import alibi_additive_mask, alibi_slopes
from tencentpretrain.models.model import build_model

VOCAB = 30


def bloom_tiny(**changes) -> ModelConfig:
    """models/bloom/*'s architecture at test size."""
    values = {"emb_size": 16, "hidden_size": 16, "feedforward_size": 32, "heads_num": 6, "attention_head_size": 4,
              "layers_num": 2, "dropout": 0.0, "embedding": ("word",), "remove_embedding_layernorm": True,
              "mask": "causal", "layernorm_positioning": "pre", "tie_weights": True, "target": ("lm",),
              "alibi_position_embedding": True, "layer_number_scale": True}
    return ModelConfig(**{**values, **changes})


@pytest.mark.parametrize("heads", [1, 4, 6, 12, 16])
def test_alibi_bias_is_transformers_bloom(heads):
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    real = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    theirs = build_alibi_tensor(real, heads, torch.float32).view(2, heads, 5)  # (B, h, S)
    ours = alibi_additive_mask(torch.ones(2, 1, 5, 5, dtype=torch.bool), real, heads)  # (B, h, T, S)
    torch.testing.assert_close(ours[:, :, 3, :], theirs, atol=0, rtol=0)
    assert alibi_slopes(heads).shape == (heads,)


def _left_padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (2, 7))
    seg = torch.ones(2, 7, dtype=torch.long)
    seg[1, :3] = 0  # the second prompt is left-padded
    positions = (seg.cumsum(1) - 1).clamp(min=0)
    return ids, seg, positions


def test_alibi_decoding_with_the_kv_cache_equals_the_full_forward():
    torch.manual_seed(0)
    model = build_model(bloom_tiny(), VOCAB).eval()
    model.init_weights(std=0.3)
    ids, seg, positions = _left_padded_batch()
    with torch.no_grad():
        full = model.logits(ids, seg, positions=positions)
        cache = model.new_kv_cache(2, 7)
        steps = [model.logits(ids[:, :4], seg[:, :4], positions=positions[:, :4], cache=cache)]
        for t in range(4, 7):
            steps.append(model.logits(ids[:, t:t + 1], seg[:, t:t + 1], positions=positions[:, t:t + 1], cache=cache))
    incremental = torch.cat(steps, dim=1)
    real = seg > 0
    torch.testing.assert_close(incremental[real], full[real], atol=1e-5, rtol=1e-5)
    # the left-padded row gives the same logits as the same tokens without padding: positions count real keys
    with torch.no_grad():
        alone = model.logits(ids[1:, 3:])
    torch.testing.assert_close(full[1, 3:], alone[0], atol=1e-5, rtol=1e-5)


def test_training_forward_honours_alibi():
    """Training skips the padding mask of plain causal models; with ALiBi the bias mask is always built."""
    torch.manual_seed(0)
    config = bloom_tiny()
    model = build_model(config, VOCAB)
    model.init_weights(std=0.3)
    plain = build_model(config.replace(alibi_position_embedding=False), VOCAB)
    plain.load_state_dict(model.state_dict())
    ids = torch.randint(1, VOCAB, (2, 6))
    seg = torch.ones_like(ids)
    loss = model(ids, ids, seg).loss
    assert abs(loss.item() - plain(ids, ids, seg).loss.item()) > 1e-4
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model.logits(ids).reshape(-1, VOCAB), ids.reshape(-1))
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_sinusoidal_decoder_decodes_incrementally_like_the_full_forward():
    """models/transformer/'s layout: word + sinusoidalpos on both sides, an encoder-decoder."""
    config = ModelConfig(emb_size=16, hidden_size=16, feedforward_size=32, heads_num=2, layers_num=2,
                         decoder="transformer", dropout=0.0, embedding=("word", "sinusoidalpos"),
                         tgt_embedding=("word", "sinusoidalpos"), tie_weights=True, max_seq_length=16)
    torch.manual_seed(0)
    model = build_model(config, VOCAB).eval()
    src, tgt = torch.randint(1, VOCAB, (2, 5)), torch.randint(1, VOCAB, (2, 6))
    src_seg = torch.ones_like(src)
    with torch.no_grad():
        memory = model.encoder(model.embedding(src, src_seg, model.embedding.default_positions(src)), src_seg,
                               positions=model.embedding.default_positions(src))
        full = model.decode(memory, src_seg, tgt)
        cache = model.new_decoder_kv_cache(2, 6)
        steps = [model.decode(memory, src_seg, tgt[:, t:t + 1], cache=cache) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_the_sinusoidal_positions_make_the_encoder_order_aware():
    config = ModelConfig(emb_size=16, hidden_size=16, feedforward_size=32, heads_num=2, layers_num=1, dropout=0.0,
                         embedding=("word", "sinusoidalpos"), max_seq_length=16)
    torch.manual_seed(0)
    model = build_model(config, VOCAB).eval()
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        forward, reverse = model.hidden_states(ids), model.hidden_states(ids.flip(1))
    assert not torch.allclose(forward, reverse.flip(1), atol=1e-3)  # a bag of words would give equal states
    assert not list(model.state_dict().keys() & {"embedding.sinusoidalpos"})  # no parameters, as the original


def test_dual_model_keys_and_ties_are_the_originals():
    stream = {"embedding": ["word", "pos"], "encoder": "lstm", "pooling": "mean"}
    values = {"emb_size": 8, "hidden_size": 8, "layers_num": 1, "dropout": 0.0, "max_seq_length": 16,
              "embedding": ("dual",), "encoder": "dual", "target": ("clr",), "stream_0": stream, "stream_1": stream}
    tied = build_model(ModelConfig(**values, tie_weights=True), VOCAB)
    untied = build_model(ModelConfig(**values, tie_weights=False), VOCAB)
    keys = sorted(tied.state_dict())
    assert keys == sorted(untied.state_dict())
    assert "embedding.dual.embedding_1.word.embedding.weight" in keys and "embedding.dual.stream_1_layer_norm.gamma" in keys
    assert "encoder.encoder_1.rnn.weight_hh_l0" in keys and "target.clr.logit_scale" in keys
    assert not [k for k in keys if k.startswith("embedding.layer_norm")]  # the dual embedding is the whole one
    assert tied.encoder.encoder_0 is tied.encoder.encoder_1 and untied.encoder.encoder_0 is not untied.encoder.encoder_1
    assert tied.embedding.dual.embedding_0 is tied.embedding.dual.embedding_1
    assert tied.embedding.dual.stream_0_layer_norm is not tied.embedding.dual.stream_1_layer_norm
    # vocabulary resize and freezing see the streams' word tables (one tensor when tied)
    assert list(tied.vocabulary_parameters()) == ["embedding.dual.embedding_0.word.embedding.weight"]
    assert len(untied.vocabulary_parameters()) == 2
    ids = torch.randint(1, VOCAB, (3, 5))
    seg = torch.ones_like(ids)
    out = tied((ids, ids.flip(1)), None, (seg, seg))
    assert out.metrics["instances_clr"] == 3 and torch.isfinite(out.loss)


def test_config_rules_of_the_new_components():
    assert ModelConfig(mask="prefix").mask == "causal_with_prefix"  # the original's dall-e/talk2face alias
    ModelConfig(encoder="gatedcnn", hidden_size=807, kernel_size=4, block_size=2)  # models/cnn: no heads to divide
    ModelConfig(encoder="lstm", hidden_size=7)
    with pytest.raises(ConfigError, match="hidden_size=807 is not divisible by heads_num=12"):
        ModelConfig(hidden_size=807)
    with pytest.raises(ConfigError, match="encoder 'gatedcnn' needs kernel_size"):
        ModelConfig(encoder="gatedcnn", block_size=2)
    with pytest.raises(ConfigError, match="alibi_position_embedding and rotary_position_embedding"):
        ModelConfig(alibi_position_embedding=True, rotary_position_embedding=True)
    with pytest.raises(ConfigError, match="stream_1: a stream sets its own encoder"):
        ModelConfig(embedding=("dual",), encoder="dual", stream_0={"embedding": ["word"], "encoder": "lstm"},
                    stream_1={"embedding": ["word"]})
    with pytest.raises(ConfigError, match="stream_0: unknown key 'data_processor'"):
        ModelConfig(embedding=("dual",), encoder="dual", stream_0={"data_processor": "lm"}, stream_1={})
    with pytest.raises(ConfigError, match='needs both "embedding": \\["dual"\\] and "encoder": "dual"'):
        ModelConfig(encoder="dual")
    with pytest.raises(ConfigError, match="stream_0/stream_1 describe the streams of a two-stream model"):
        ModelConfig(stream_0={"encoder": "lstm"})
    with pytest.raises(ConfigError, match="splits hidden_size between two directions: it must be even, got 7"):
        build_model(ModelConfig(encoder="bilstm", hidden_size=7, target=("lm",)), VOCAB)
    lstm_streams = {"stream_0": {"embedding": ["word"], "encoder": "lstm"}, "stream_1": {"embedding": ["word"],
                    "encoder": "lstm"}, "embedding": ("dual",), "encoder": "dual"}
    with pytest.raises(ConfigError, match="target 'lm' reads one stream, but this is a two-stream"):
        build_model(ModelConfig(**lstm_streams), VOCAB)
    with pytest.raises(ConfigError, match="target 'clr' compares two streams"):
        build_model(ModelConfig(target=("clr",)), VOCAB)


def test_recurrent_encoders_refuse_the_kv_cache():
    model = build_model(ModelConfig(encoder="gru", hidden_size=8, emb_size=8, layers_num=1, target=("lm",)), VOCAB)
    ids = torch.randint(1, VOCAB, (1, 4))
    with pytest.raises(ConfigError, match="encoder 'gru' has no KV cache"):
        model.logits(ids, cache=model.new_kv_cache(1, 8))


def test_alibi_generation_with_continuous_batching_is_greedy_full_recompute():
    """The serving engine's slot cache (rows joining and leaving, fewer active rows than slots) with ALiBi gives
    the tokens of greedy decoding by full recomputation."""
    from tencentpretrain.generation.engine import GenerationConfig
    from tencentpretrain.generation.generate import generate

    torch.manual_seed(0)
    model = build_model(bloom_tiny(max_seq_length=32), VOCAB).eval()
    model.init_weights(std=0.3)
    prompts = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    lengths = [6, 3, 5]
    configs = [GenerationConfig(max_new_tokens=n, stop_at_eos=False) for n in lengths]
    completions = generate(model, None, prompts, configs, batch_size=4, max_length=16)
    for prompt, n, completion in zip(prompts, lengths, completions):
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(n):
                ids.append(int(model.logits(torch.tensor([ids]))[0, -1].argmax()))
        assert completion.token_ids == ids[len(prompt):]
