"""Our components against the original TencentPretrain's, on the outputs it produced for fixed weights and inputs
(recorded by tests/assets/make_original_components.py into original_components/components.safetensors): the
recurrent and gated-CNN encoders and the dual embedding + encoder load the original's weights under the same
state keys and give its outputs; the sinusoidal positions (and the word scaling that goes with them), the ALiBi bias (with the original's layer-number scaling), and the clr and bilm losses
are its values."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from tencentpretrain.config import ModelConfig
from tencentpretrain.embeddings.sinusoidalpos import SinusoidalPositionEmbedding
from tencentpretrain.embeddings.stack import Embedding
from tencentpretrain.layers.alibi import alibi_additive_mask
from tencentpretrain.layers.attention import MultiHeadedAttention
from tencentpretrain.registry import ENCODERS, TARGETS

ASSET = os.path.join(os.path.dirname(__file__), "..", "assets", "original_components", "components.safetensors")


@pytest.fixture(scope="module")
def recorded() -> dict[str, torch.Tensor]:
    return load_file(ASSET)


def case(recorded: dict[str, torch.Tensor], name: str, part: str) -> dict[str, torch.Tensor]:
    prefix = f"{name}.{part}."
    return {k[len(prefix):]: v for k, v in recorded.items() if k.startswith(prefix)}


ENCODER_CASES = {  # case name in the asset -> (registered encoder, config changes)
    "rnn": ("rnn", {}), "lstm": ("lstm", {}), "gru": ("gru", {}),
    "lstm_bidirectional": ("lstm", {"bidirectional": True}), "gru_bidirectional": ("gru", {"bidirectional": True}),
    "birnn": ("birnn", {}), "bilstm": ("bilstm", {}), "bigru": ("bigru", {}),
    "gatedcnn": ("gatedcnn", {"layers_num": 5}), "gatedcnn_one_layer": ("gatedcnn", {"layers_num": 1}),
}


@pytest.mark.parametrize("name", ENCODER_CASES)
def test_encoders_give_the_originals_outputs_from_its_weights(recorded, name):
    encoder, changes = ENCODER_CASES[name]
    values = {"emb_size": 6, "hidden_size": 8, "layers_num": 2, "dropout": 0.0, "kernel_size": 3, "block_size": 2}
    config = ModelConfig(**{**values, "encoder": encoder, **changes})
    module = ENCODERS.get(encoder)(config).eval()
    module.load_state_dict(case(recorded, name, "state"), strict=True)  # the original's keys, every one
    inputs = case(recorded, name, "in")
    with torch.no_grad():
        hidden = module(inputs["emb"], inputs["seg"], positions=None)
    expected = case(recorded, name, "out")["hidden"]
    assert hidden.shape == expected.shape == (2, 6, 8)
    torch.testing.assert_close(hidden, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("width", [6, 10])
def test_sinusoidal_positions_are_the_originals(recorded, width):
    config = ModelConfig(emb_size=width, max_seq_length=16, embedding=("word", "sinusoidalpos"))
    module = SinusoidalPositionEmbedding(config, 11)
    seg = case(recorded, f"sinusoidal_{width}", "in")["seg"]
    positions = torch.arange(seg.shape[1]).expand(seg.shape[0], -1)
    expected = case(recorded, f"sinusoidal_{width}", "out")["emb"]
    torch.testing.assert_close(module(seg, seg, positions), expected, atol=0, rtol=0)
    # padding is zero; position 0 reads row 2, whose first pair is (sin 2, cos 2)
    assert expected[1, 3:].abs().sum() == 0
    torch.testing.assert_close(expected[0, 0, :2], torch.stack([torch.tensor(2.0).sin(), torch.tensor(2.0).cos()]))


def test_word_and_sinusoidal_embedding_is_the_originals(recorded):
    """models/transformer/'s embedding: word vectors scaled by sqrt(emb_size), plus the positions, layer norm."""
    config = ModelConfig(emb_size=6, max_seq_length=16, dropout=0.0, embedding=("word", "sinusoidalpos"))
    stack = Embedding(config, 11, config.embedding).eval()
    stack.load_state_dict(case(recorded, "word_sinusoidal", "state"), strict=True)
    inputs = case(recorded, "word_sinusoidal", "in")
    positions = stack.default_positions(inputs["src"])
    with torch.no_grad():
        emb = stack(inputs["src"], inputs["seg"], positions)
    torch.testing.assert_close(emb, case(recorded, "word_sinusoidal", "out")["emb"], atol=1e-6, rtol=1e-5)


def test_dual_embedding_and_encoder_are_the_originals(recorded):
    """models/rnn/siamese_lstm's layout, untied: each stream's stack, its second layer norm, its LSTM."""
    stream = {"embedding": ["word", "pos"], "encoder": "lstm"}
    config = ModelConfig(emb_size=6, hidden_size=8, layers_num=2, dropout=0.0, max_seq_length=16,
                         embedding=("dual",), encoder="dual", target=("clr",), stream_0=stream, stream_1=stream)
    embedding = Embedding(config, 11, config.embedding).eval()
    encoder = ENCODERS.get("dual")(config).eval()
    state = case(recorded, "dual", "state")
    embedding.dual.load_state_dict({k[len("embedding."):]: v for k, v in state.items() if k.startswith("embedding.")},
                                   strict=True)
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")},
                            strict=True)
    inputs, expected = case(recorded, "dual", "in"), case(recorded, "dual", "out")
    src, seg = (inputs["src_0"], inputs["src_1"]), (inputs["seg_0"], inputs["seg_1"])
    with torch.no_grad():
        positions = embedding.default_positions(src)
        hidden = encoder(embedding(src, seg, positions), seg, positions=positions)
    torch.testing.assert_close(hidden[0], expected["hidden_0"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(hidden[1], expected["hidden_1"], atol=1e-6, rtol=1e-5)


def test_sinusoidal_positions_past_the_table_are_an_error():
    module = SinusoidalPositionEmbedding(ModelConfig(emb_size=6, max_seq_length=8), 11)
    positions = torch.arange(7)[None]
    with pytest.raises(ValueError, match="past the sinusoidal table of max_seq_length=8"):
        module(positions, torch.ones_like(positions), positions)


def test_alibi_and_layer_number_scaling_are_the_originals_attention(recorded):
    """The original's attention with its ALiBi tensor and layer_number=3 (its layer_number_scale) against ours:
    our SDPA with the ALiBi additive mask, no scaling. Rows of a left-padded batch, real queries compared."""
    state, inputs = case(recorded, "alibi_attention", "state"), case(recorded, "alibi_attention", "in")
    expected = case(recorded, "alibi_attention", "out")
    real = inputs["real"]  # (B, T): the second row is left-padded
    mask = alibi_additive_mask(torch.ones(2, 1, 6, 6, dtype=torch.bool), real, 6)  # (B, h, T, S)
    torch.testing.assert_close(mask[:, :, 0, :], expected["alibi"], atol=0, rtol=0)  # the bias itself

    attention = MultiHeadedAttention(12, 6, 2).eval()
    attention.load_state_dict(state, strict=True)
    visible = torch.ones(6, 6, dtype=torch.bool).tril()[None, None] & (real > 0)[:, None, None, :]
    with torch.no_grad():
        ours = attention(inputs["hidden"], mask=alibi_additive_mask(visible, real, 6))
    queries = real > 0
    torch.testing.assert_close(ours[queries], expected["hidden"][queries], atol=1e-5, rtol=1e-5)


def test_clr_loss_is_the_originals(recorded):
    stream = {"embedding": ["word"], "encoder": "lstm", "hidden_size": 8, "emb_size": 8}
    config = ModelConfig(embedding=("dual",), encoder="dual", target=("clr",), projection=True, feature_size=4,
                         stream_0={**stream, "pooling": "mean"}, stream_1={**stream, "pooling": "first"})
    target = TARGETS.get("clr")(config, 11)
    target.load_state_dict(case(recorded, "clr", "state"), strict=True)
    inputs, expected = case(recorded, "clr", "in"), case(recorded, "clr", "out")
    out = target((inputs["hidden_0"], inputs["hidden_1"]), None, (inputs["seg_0"] > 0, inputs["seg_1"] > 0))
    torch.testing.assert_close(out.loss, expected["loss"], atol=1e-5, rtol=1e-5)
    assert out.metrics["correct_clr"] == expected["correct"] and out.metrics["instances_clr"] == 3


def test_bilm_losses_are_the_originals(recorded):
    target = TARGETS.get("bilm")(ModelConfig(hidden_size=8, heads_num=2, target=("bilm",)), 11)
    target.load_state_dict(case(recorded, "bilm", "state"), strict=True)
    inputs, expected = case(recorded, "bilm", "in"), case(recorded, "bilm", "out")
    out = target(inputs["hidden"], (inputs["tgt_forward"], inputs["tgt_backward"]), inputs["seg"] > 0)
    torch.testing.assert_close(out.metrics["loss_forward_bilm"], expected["loss_forward"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.metrics["loss_backward_bilm"], expected["loss_backward"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, expected["loss_forward"] + expected["loss_backward"], atol=1e-5, rtol=1e-5)
