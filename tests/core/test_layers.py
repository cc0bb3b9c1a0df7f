"""Leaf layers against explicit reference math."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from tencentpretrain.layers.attention import MultiHeadedAttention
from tencentpretrain.layers.gated_feed_forward import GatedFeedForward
from tencentpretrain.layers.kv_cache import KVCache
from tencentpretrain.layers.layer_norm import LayerNorm
from tencentpretrain.layers.masks import build_attention_mask
from tencentpretrain.layers.rms_norm import RMSNorm
from tencentpretrain.layers.rope import apply_rotary_emb, rope_rotations
from tencentpretrain.layers.t5_layer_norm import T5LayerNorm


def test_rms_norm_formula():
    norm = RMSNorm(8, eps=1e-6)
    norm.weight.data = torch.randn(8)
    x = torch.randn(3, 5, 8)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    assert torch.equal(RMSNorm(8).weight, torch.ones(8))


def test_t5_norm_equals_rms_in_fp32():
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(T5LayerNorm(8)(x), RMSNorm(8)(x))


def test_original_layer_norm_uses_unbiased_std_with_eps_outside_sqrt():
    norm = LayerNorm(6, eps=1e-6)
    x = torch.randn(4, 6)
    mean = x.mean(-1, keepdim=True)
    std = torch.sqrt(((x - mean) ** 2).sum(-1, keepdim=True) / (6 - 1))
    torch.testing.assert_close(norm(x), (x - mean) / (std + 1e-6))
    assert not torch.allclose(norm(x), F.layer_norm(x, (6,), eps=1e-6))
    assert set(dict(norm.named_parameters())) == {"gamma", "beta"}


@pytest.mark.parametrize("shape", [(4, 6), (3, 5, 128), (2, 7, 3, 64)])
def test_original_layer_norm_one_pass_matches_the_formula_in_values_and_gradients(shape):
    torch.manual_seed(0)
    norm = LayerNorm(shape[-1], eps=1e-6)
    norm.gamma.data = torch.randn(shape[-1])
    norm.beta.data = torch.randn(shape[-1])
    x = (torch.randn(*shape) * 3 + 1).requires_grad_()
    x[0, ...].data.fill_(0.5)  # constant rows: std 0, gradient through std must stay finite (0), as autograd's
    dy = torch.randn(*shape)
    fast = norm(x)
    grads = torch.autograd.grad(fast, (x, norm.gamma, norm.beta), dy)
    slow = norm.reference_forward(x)
    expected = torch.autograd.grad(slow, (x, norm.gamma, norm.beta), dy)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected):
        assert torch.isfinite(got).all()
        # gradients of a constant row are ~1/eps = 1e6 in size: compare them relative to that
        scale = want.abs().amax().clamp_min(1.0)
        torch.testing.assert_close(got / scale, want / scale, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0][1:], expected[0][1:], rtol=1e-5, atol=1e-5)
    # and in float64, where rounding cannot hide a wrong term
    norm64 = copy.deepcopy(norm).double()
    x64 = x.detach().double().requires_grad_()
    got = torch.autograd.grad(norm64(x64), (x64, norm64.gamma, norm64.beta), dy.double())
    want = torch.autograd.grad(norm64.reference_forward(x64), (x64, norm64.gamma, norm64.beta), dy.double())
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_original_layer_norm_gradcheck():
    norm = LayerNorm(5).double()
    norm.gamma.data = torch.randn(5, dtype=torch.float64)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(norm, (x,))


def _reference_rope(x: torch.Tensor, theta: float, scaling_factor: float = 1.0) -> torch.Tensor:
    """The rotation written out pair by pair: (x0, x1) -> (x0 cos a - x1 sin a, x0 sin a + x1 cos a) with
    a = pos / scaling * theta ** (-2i / dim), as in Meta's LLaMA (which computes it with complex numbers)."""
    _, length, _, dim = x.shape
    out = torch.empty_like(x)
    for pos in range(length):
        for i in range(dim // 2):
            angle = torch.tensor(pos / scaling_factor * theta ** (-2 * i / dim), dtype=torch.float64)
            cos, sin = torch.cos(angle).float(), torch.sin(angle).float()
            x0, x1 = x[:, pos, :, 2 * i], x[:, pos, :, 2 * i + 1]
            out[:, pos, :, 2 * i] = x0 * cos - x1 * sin
            out[:, pos, :, 2 * i + 1] = x0 * sin + x1 * cos
    return out


@pytest.mark.parametrize("theta, scaling", [(10000.0, 1.0), (1e6, 1.0), (10000.0, 2.0)])
def test_rope_matches_the_pairwise_rotation(theta, scaling):
    x = torch.randn(2, 11, 3, 16)
    positions = torch.arange(11).expand(2, -1)
    rotations = rope_rotations(positions, 16, theta, scaling_factor=scaling)
    torch.testing.assert_close(apply_rotary_emb(x, rotations), _reference_rope(x, theta, scaling))


def _explicit_attention(attn: MultiHeadedAttention, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Scores, -inf where hidden, softmax, weighted sum: the textbook formula with repeat_kv."""
    batch, length, _ = x.shape
    q = attn.linear_layers[0](x).view(batch, length, attn.heads_num, -1).transpose(1, 2)
    k = attn.linear_layers[1](x).view(batch, length, attn.kv_heads_num, -1).transpose(1, 2)
    v = attn.linear_layers[2](x).view(batch, length, attn.kv_heads_num, -1).transpose(1, 2)
    groups = attn.heads_num // attn.kv_heads_num
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_size)
    scores = scores.masked_fill(~visible, float("-inf"))
    out = torch.softmax(scores, -1) @ v
    return attn.final_linear(out.transpose(1, 2).reshape(batch, length, -1))


@pytest.mark.parametrize("kind", ["causal", "fully_visible", "causal_with_prefix"])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_sdpa_attention_equals_explicit_math(kind, kv_heads):
    attn = MultiHeadedAttention(32, 4, 8, kv_heads_num=kv_heads).eval()
    x = torch.randn(2, 7, 32)
    seg = torch.tensor([[1, 1, 1, 2, 2, 2, 0], [1, 1, 2, 2, 2, 2, 2]])
    mask = build_attention_mask(kind, seg, 0)
    torch.testing.assert_close(attn(x, mask=mask), _explicit_attention(attn, x, mask), atol=1e-5, rtol=1e-5)


def test_plain_causal_fast_path_equals_explicit_mask():
    attn = MultiHeadedAttention(32, 4, 8, kv_heads_num=2).eval()
    x = torch.randn(2, 9, 32)
    mask = build_attention_mask("causal", torch.ones(2, 9, dtype=torch.long), 0)
    torch.testing.assert_close(attn(x, mask=None), attn(x, mask=mask), atol=1e-6, rtol=1e-5)


def test_mask_rules_golden():
    seg = torch.tensor([[1, 1, 2, 2, 0]])
    prefix = build_attention_mask("causal_with_prefix", seg, 0)[0, 0].int()
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],  # a padding query sees itself (never an empty softmax)
        ]
    )
    assert torch.equal(prefix, expected)
    full = build_attention_mask("fully_visible", seg, 0)[0, 0].int()
    assert torch.equal(full[0], torch.tensor([1, 1, 1, 1, 0]))


@pytest.mark.parametrize("bias", [True, False])
def test_fused_projections_give_the_same_outputs(bias):
    """fuse_qkv_ / fuse_gate_up_ (inference) compute the same products, with GQA, rotary positions and a cache."""
    torch.manual_seed(0)
    attn = MultiHeadedAttention(32, 4, 8, kv_heads_num=2, bias=bias).eval()
    fused = copy.deepcopy(attn)
    fused.fuse_qkv_()
    x = torch.randn(2, 5, 32)
    rope = rope_rotations(torch.arange(5).expand(2, -1), 8, 10000.0)
    caches = [KVCache(layers_num=1, batch_size=2, kv_heads_num=2, head_size=8, max_length=8) for _ in range(2)]
    outs = []
    for module, cache in zip((attn, fused), caches):
        cache.stage(torch.ones(2, 5, dtype=torch.long))
        outs.append(module(x, rope=rope, cache=cache, mask=torch.ones(2, 1, 5, 5, dtype=torch.bool).tril()))
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(caches[1].keys[0], caches[0].keys[0])
    with pytest.raises(ValueError, match="self-attention"):
        fused(x, torch.randn(2, 3, 32))

    ffn = GatedFeedForward(32, 48, "silu", bias=bias).eval()
    fused_ffn = copy.deepcopy(ffn)
    fused_ffn.fuse_gate_up_()
    torch.testing.assert_close(fused_ffn(x), ffn(x))


@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_gqa_decode_step_folds_query_groups_and_equals_enable_gqa(mask_kind):
    """One query per row with a mask: the query heads of a group become rows of their key/value head (no K/V
    copy, equal head counts for SDPA's fused kernels); the result equals SDPA's own grouped-query attention."""
    torch.manual_seed(0)
    attn = MultiHeadedAttention(32, 8, 4, kv_heads_num=2).eval()
    q = torch.randn(3, 8, 1, 4)
    k, v = torch.randn(3, 2, 7, 4), torch.randn(3, 2, 7, 4)
    visible = torch.rand(3, 1, 1, 7) > 0.3
    visible[..., 0] = True
    mask = visible if mask_kind == "bool" else torch.zeros(3, 1, 1, 7).masked_fill(~visible, float("-inf"))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale, enable_gqa=True)
    torch.testing.assert_close(attn._sdpa(q, k, v, mask, causal=False), expected)
    full_query = torch.randn(3, 8, 5, 4)  # several queries per row: not folded, same as enable_gqa
    full_mask = visible.expand(3, 1, 5, 7)
    torch.testing.assert_close(attn._sdpa(full_query, k, v, full_mask, causal=False), F.scaled_dot_product_attention(
        full_query, k, v, attn_mask=full_mask, scale=attn.scale, enable_gqa=True))
