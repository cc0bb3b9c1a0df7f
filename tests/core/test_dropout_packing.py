"""The cheap CPU dropout masks (layers/dropout.py) and skipping the padding's work (layers/packing.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.encoders.transformer import TransformerEncoder
from tencentpretrain.finetune.classifier import Classifier
from tencentpretrain.layers import dropout as fast
from tencentpretrain.layers.attention import MultiHeadedAttention
from tencentpretrain.layers.masks import build_attention_mask
from tencentpretrain.layers.packing import Packing
from tests.helpers import tiny_llama_config

BERT = {"emb_size": 32, "feedforward_size": 64, "hidden_size": 32, "hidden_act": "gelu", "heads_num": 2,
        "layers_num": 2, "max_seq_length": 64, "dropout": 0.0, "embedding": ("word", "pos", "seg"),
        "encoder": "transformer", "mask": "fully_visible", "target": ("mlm",)}


@pytest.fixture(autouse=True)
def cheap_masks():
    fast.use_torch_dropout(False)
    yield
    fast.use_torch_dropout(False)


# ---------------------------------------------------------------------- dropout
def test_masks_keep_the_right_fraction_and_keep_the_expectation():
    torch.manual_seed(0)
    n = 1 << 20
    out = fast.dropout(torch.ones(n), 0.1)
    kept = out != 0
    # P(keep) = 58982 / 65536; 5 standard deviations of the kept fraction are 0.0015
    assert abs(kept.float().mean().item() - 58982 / 65536) < 0.0015
    assert torch.equal(out[kept], torch.full((int(kept.sum()),), 65536 / 58982))
    assert abs(out.mean().item() - 1.0) < 0.002
    # the four elements of a 64-bit draw are independent: both neighbours kept about 0.9 ** 2 of the time
    both = (kept[:-1] & kept[1:]).float().mean().item()
    assert abs(both - (58982 / 65536) ** 2) < 0.002


def test_masks_follow_the_seed_and_differ_across_calls():
    torch.manual_seed(3)
    a, b = fast.dropout(torch.ones(4096), 0.3), fast.dropout(torch.ones(4096), 0.3)
    torch.manual_seed(3)
    assert torch.equal(fast.dropout(torch.ones(4096), 0.3), a)
    assert not torch.equal(a, b)


def test_backward_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = torch.randn(8, 33, requires_grad=True)
    weights = torch.randn(8, 33)
    out = fast.dropout(x, 0.25)
    (out * weights).sum().backward()
    keep = out != 0
    scale = 65536 / round(0.75 * 65536)
    torch.testing.assert_close(out, x.detach() * keep * scale)
    torch.testing.assert_close(x.grad, weights * keep * scale)


def test_identity_outside_training_and_torch_dropout_when_switched():
    x = torch.randn(5, 7)
    assert torch.equal(fast.dropout(x, 0.5, training=False), x)
    assert torch.equal(fast.dropout(x, 0.0), x)
    assert torch.equal(fast.dropout(x, 1.0), torch.zeros_like(x))
    fast.use_torch_dropout(True)
    torch.manual_seed(5)
    ours = fast.Dropout(0.5)(x)
    torch.manual_seed(5)
    assert torch.equal(ours, F.dropout(x, 0.5, True))


def test_dropout_module_is_an_nn_dropout_without_state():
    module = fast.Dropout(0.1)
    assert isinstance(module, nn.Dropout) and module.p == 0.1 and not module.state_dict()
    module.eval()
    x = torch.randn(3, 4)
    assert torch.equal(module(x), x)


@pytest.mark.parametrize("case", ["bool", "float", "causal", "gqa"])
def test_attention_written_out_equals_sdpa(case):
    """The path CPU training with dropout takes, at p = 0, against scaled_dot_product_attention."""
    torch.manual_seed(2)
    kv_heads = 2 if case == "gqa" else 4
    attn = MultiHeadedAttention(32, 4, 8, kv_heads_num=kv_heads).double()
    q = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    k, v = torch.randn(2, kv_heads, 6, 8, dtype=torch.float64), torch.randn(2, kv_heads, 6, 8, dtype=torch.float64)
    mask = None
    if case in ("bool", "gqa"):
        mask = build_attention_mask("fully_visible", torch.tensor([[1] * 6, [1] * 4 + [0] * 2]), 0)
    elif case == "float":
        mask = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=attn.scale,
                                              enable_gqa=kv_heads != 4)
    torch.testing.assert_close(attn._attend_with_dropout(q, k, v, mask), expected)


def test_attention_dropout_takes_the_cheap_masks_in_training():
    """In CPU training the probabilities' dropout is the one draw of ``keep_mask`` (B, h, T, S)."""
    torch.manual_seed(0)
    attn = MultiHeadedAttention(32, 4, 8, dropout=0.5)
    x = torch.randn(2, 6, 32)
    mask = build_attention_mask("fully_visible", torch.tensor([[1] * 6, [1] * 4 + [0] * 2]), 0)
    torch.manual_seed(9)
    trained = attn(x, mask=mask)
    torch.manual_seed(9)
    keep, scale = fast.keep_mask(torch.Size((2, 4, 6, 6)), 0.5)
    q, k, v = (proj(x).view(2, 6, 4, 8).transpose(1, 2) for proj in attn.linear_layers)
    scores = (q @ k.transpose(-1, -2) * attn.scale).masked_fill(~mask, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, -1) * keep * scale
    expected = attn.final_linear((probs @ v).transpose(1, 2).reshape(2, 6, 32))
    torch.testing.assert_close(trained, expected)
    assert not torch.equal(trained, attn.eval()(x, mask=mask))


# ---------------------------------------------------------------------- packing
def test_packing_round_trip_puts_zeros_at_the_padding():
    valid = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    x = torch.randn(2, 3, 4)
    packing = Packing(valid)
    packed = packing.pack(x)
    assert packed.shape == (5, 4)
    back = packing.unpack(packed)
    assert torch.equal(back[valid], x[valid]) and torch.equal(back[~valid], torch.zeros(1, 4))


def encoder_pair(config: ModelConfig, seg: torch.Tensor, positions: torch.Tensor):
    """Outputs and gradients of one encoder with and without skip_padding (float64, same input and weights)."""
    torch.manual_seed(0)
    encoder = TransformerEncoder(config).double()
    emb = torch.randn(*seg.shape, config.hidden_size, dtype=torch.float64)
    weights = torch.randn(*seg.shape, config.hidden_size, dtype=torch.float64) * (seg > 0).unsqueeze(-1)
    results = []
    for skip in (False, True):
        encoder.zero_grad()
        out = encoder(emb, seg, positions=positions, skip_padding=skip)
        (out * weights).sum().backward()  # reads real positions only
        results.append((out, {n: p.grad.clone() for n, p in encoder.named_parameters()}))
    return results


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_skipping_padding_changes_no_real_state_or_gradient(kind):
    config = ModelConfig(**BERT) if kind == "bert" else tiny_llama_config()
    seg = torch.tensor([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0, 0]])
    positions = torch.arange(7).expand(3, 7)
    (full, full_grads), (skipped, skipped_grads) = encoder_pair(config, seg, positions)
    real = seg > 0
    torch.testing.assert_close(skipped[real], full[real], rtol=0, atol=1e-12)
    assert torch.equal(skipped[~real], torch.zeros_like(skipped[~real]))
    for name, grad in full_grads.items():
        torch.testing.assert_close(skipped_grads[name], grad, rtol=0, atol=1e-12)


def test_classifier_skips_padding_and_predicts_the_same():
    torch.manual_seed(0)
    model = Classifier(ModelConfig(**BERT, pooling="mean"), 50, labels_num=3).eval()
    batch = {"src": torch.randint(5, 50, (3, 9)), "seg": torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7])}
    assert model._skips_padding()
    skipped = model(batch).logits
    model.head_reads_padding = True
    torch.testing.assert_close(model(batch).logits, skipped, rtol=0, atol=1e-6)


def test_original_dropout_pads_training_batches_to_the_original_width():
    """--original_dropout: torch's masks over batches padded to --seq_length, as the original drew them; the real
    states equal those of a batch padded that far by hand, and the padding is not skipped."""
    torch.manual_seed(0)
    model = Classifier(ModelConfig(**{**BERT, "dropout": 0.3}), 50, labels_num=2).train()
    src = torch.randint(5, 50, (2, 5))
    seg = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    fast.use_torch_dropout(True)
    assert not model._skips_padding()
    model.original_mask_width = 12
    torch.manual_seed(4)
    padded_here = model.encode(src, seg)
    model.original_mask_width = None
    torch.manual_seed(4)
    padded_by_hand = model.encode(F.pad(src, (0, 7)), F.pad(seg, (0, 7)))
    assert padded_here.shape == (2, 5, 32)
    assert torch.equal(padded_here, padded_by_hand[:, :5])
