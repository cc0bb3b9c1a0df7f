"""The fused output projection + cross-entropy against the plain two-step computation."""

import pytest
import torch
import torch.nn.functional as F

from tencentpretrain.layers.linear_cross_entropy import linear_cross_entropy
from tencentpretrain.models.model import build_model
from tests.helpers import tiny_llama_config


@pytest.mark.parametrize("rows,chunk", [(37, 8), (5, 1024)])
def test_loss_and_gradients_equal_plain_cross_entropy(rows, chunk):
    hidden = torch.randn(rows, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (rows,))
    fused = linear_cross_entropy(hidden, weight, labels, chunk_rows=chunk)
    (fused * 3.0).backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    plain = F.cross_entropy(hidden @ weight.T, labels)
    (plain * 3.0).backward()
    torch.testing.assert_close(fused, plain)
    torch.testing.assert_close(grads[0], hidden.grad)
    torch.testing.assert_close(grads[1], weight.grad)


def test_bf16_autocast_is_close_to_fp32():
    hidden = torch.randn(40, 32)
    weight = torch.randn(64, 32) * 0.1
    labels = torch.randint(0, 64, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = linear_cross_entropy(hidden, weight, labels)
    torch.testing.assert_close(fused, F.cross_entropy(hidden @ weight.T, labels), atol=2e-2, rtol=2e-2)


def test_model_loss_and_grads_equal_with_and_without_fusion():
    torch.manual_seed(0)
    fused_model = build_model(tiny_llama_config(), 97)
    plain_model = build_model(tiny_llama_config(label_smoothing=0.0), 97)
    plain_model.load_state_dict(fused_model.state_dict())
    plain_model.target.lm._can_fuse = lambda: False  # force the two-step path
    src, tgt = torch.randint(0, 97, (2, 12)), torch.randint(0, 97, (2, 12))
    seg = torch.ones_like(src)
    losses = []
    for model in (fused_model, plain_model):
        out = model(src, tgt, seg)
        out.loss.backward()
        losses.append(out.loss)
    torch.testing.assert_close(losses[0], losses[1])
    for (name, a), b in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


@pytest.mark.parametrize("rows,chunk", [(37, 8), (5, 1024)])
def test_with_a_bias_loss_and_gradients_equal_plain_cross_entropy(rows, chunk):
    """BERT's and BART's output layers have a bias: it is added to every chunk's logits and gets their column
    sums as gradient."""
    hidden = torch.randn(rows, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    bias = torch.randn(50, requires_grad=True)
    labels = torch.randint(0, 50, (rows,))
    fused = linear_cross_entropy(hidden, weight, labels, bias=bias, chunk_rows=chunk)
    (fused * 3.0).backward()
    grads = hidden.grad.clone(), weight.grad.clone(), bias.grad.clone()
    hidden.grad = weight.grad = bias.grad = None
    plain = F.cross_entropy(F.linear(hidden, weight, bias), labels)
    (plain * 3.0).backward()
    torch.testing.assert_close(fused, plain)
    for got, expected in zip(grads, (hidden.grad, weight.grad, bias.grad)):
        torch.testing.assert_close(got, expected)
