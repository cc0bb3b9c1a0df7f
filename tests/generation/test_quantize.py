"""Inference transforms: transposed fp32 linears, int8 and int4 weights (quality, memory, generation)."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

from tencentpretrain.generation import GenerationConfig, generate
from tencentpretrain.models.model import build_model
from tencentpretrain.transforms import quantize
from tencentpretrain.transforms.quantize import (
    Int4Linear,
    Int4LinearCPU,
    Int8Linear,
    PackedLinear,
    QuantizedEmbedding,
    TransposedLinear,
    dequantize_int4,
    optimize_for_inference,
    pack_nibbles,
    quantize_int4_groupwise,
    quantize_model,
    unpack_nibbles,
    weight_memory_bytes,
)
from tests.generation.scripted import tiny_model, tiny_tokenizer
from tests.helpers import REPO_ROOT, tiny_llama_config


@pytest.mark.parametrize("onednn", [True, False])
def test_fast_fp32_linears_give_the_same_logits_and_tokens(onednn, monkeypatch):
    if onednn and not quantize._onednn_available():
        pytest.skip("this torch has no oneDNN")
    monkeypatch.setattr(quantize, "_onednn_available", lambda: onednn)
    # A wide feed-forward layer (above PLAIN_COPY_MAX_ENTRIES) is only packed; the others also keep W.T.
    model = tiny_model(300, feedforward_size=PackedLinear.PLAIN_COPY_MAX_ENTRIES // 64)
    fast = optimize_for_inference(copy.deepcopy(model))
    kind = PackedLinear if onednn else TransposedLinear
    assert not any(type(m) is torch.nn.Linear for m in fast.modules())
    assert all(layer.self_attn.qkv is not None and layer.feed_forward.gate_up is not None
               for layer in fast.encoder.transformer)
    assert all(isinstance(m, kind) for m in fast.modules() if hasattr(m, "in_features"))
    if onednn:
        assert {m.weight_t is None for m in fast.modules() if isinstance(m, PackedLinear)} == {True, False}
    for shape in [(1, 1), (2, 9), (5, 1)]:  # one row (the W.T path), prefill, batched decoding
        x = torch.randint(0, 300, shape)
        torch.testing.assert_close(fast.logits(x), model.logits(x), atol=1e-5, rtol=1e-5)
    config = GenerationConfig(max_new_tokens=10, stop_at_eos=False)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    expected = [c.token_ids for c in generate(model, None, prompts, config)]
    assert [c.token_ids for c in generate(fast, None, prompts, config)] == expected


def test_int4_packing_round_trips_and_error_is_bounded():
    w = torch.randn(48, 96)
    q, scale, low = quantize_int4_groupwise(w, 32)
    assert torch.equal(unpack_nibbles(pack_nibbles(q)), q)
    deq = dequantize_int4(pack_nibbles(q), scale, low, torch.float32)
    assert (deq - w).abs().max() <= scale.max() / 2 + 1e-6


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_model_is_close_and_small(mode):
    model = tiny_model(700, hidden_size=128, emb_size=128, feedforward_size=352)
    quant = quantize_model(copy.deepcopy(model), mode)
    x = torch.randint(0, 700, (2, 12))
    ref, out = model.logits(x), quant.logits(x)
    rel = (out - ref).norm() / ref.norm()
    assert rel < (0.06 if mode == "int8" else 0.25), rel
    ratio = weight_memory_bytes(quant) / weight_memory_bytes(model)
    assert ratio <= (0.30 if mode == "int8" else 0.20), ratio
    assert isinstance(quant.embedding.word.embedding, QuantizedEmbedding)
    assert not any(type(m) is torch.nn.Linear for m in quant.modules())
    expected = Int4LinearCPU if mode == "int4" else torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(quant.target.lm.output_layer, expected)


@pytest.mark.parametrize("make", [Int8Linear, lambda lin: Int4Linear(lin, 32)])
def test_device_agnostic_kernels_match_the_cpu_kernels(make):
    """The GPU path (dequantize in the forward) computes what the CPU kernels compute."""
    lin = torch.nn.Linear(96, 40, bias=True)
    x = torch.randn(3, 96)
    generic = make(lin)(x)
    cpu = quantize_model(torch.nn.Sequential(torch.nn.LayerNorm(96), lin), "int8" if make is Int8Linear else "int4")[1](x)
    torch.testing.assert_close(generic, cpu, atol=0.05, rtol=0.05)
    torch.testing.assert_close(generic, lin(x), atol=0.2, rtol=0.2)


# ------------------------------------------------------------------------------------------ trained model
def corpus_ids(tok, lines):
    ids = []
    for line in lines:
        ids += [tok.bos_id] + tok.encode(line.strip()) + [tok.eos_id]
    return torch.tensor(ids)


def perplexity(model, ids, seq=64):
    windows = ids[: len(ids) // seq * seq].view(-1, seq)
    with torch.no_grad():
        logits = model.logits(windows[:, :-1]).float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    return math.exp(loss.item())


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """A tiny LLaMA trained for 150 steps on the project's Chinese corpus (cached for the module)."""
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    with open(os.path.join(REPO_ROOT, "data", "zh_corpus.txt"), encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    train, held_out = corpus_ids(tok, lines[:-8]), corpus_ids(tok, lines[-8:])
    config = tiny_llama_config(hidden_size=128, emb_size=128, feedforward_size=352, heads_num=4, layers_num=2)
    model = build_model(config, tok.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    seq, batch = 64, 8
    for _ in range(150):
        starts = torch.randint(0, len(train) - seq - 1, (batch,))
        src = torch.stack([train[s : s + seq] for s in starts])
        tgt = torch.stack([train[s + 1 : s + seq + 1] for s in starts])
        loss = model(src, tgt, torch.ones_like(src)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), held_out


@pytest.mark.slow
@pytest.mark.parametrize("mode,tolerance,memory", [("int8", 0.01, 0.30), ("int4", 0.05, 0.20)])
def test_trained_model_perplexity_and_memory(trained_model, mode, tolerance, memory):
    model, held_out = trained_model
    base = perplexity(model, held_out)
    assert base < 200  # the model learned something (uniform would be ~700)
    quant = quantize_model(copy.deepcopy(model), mode)
    ppl = perplexity(quant, held_out)
    print(f"{mode}: perplexity {base:.3f} -> {ppl:.3f} ({ppl / base - 1:+.2%}), "
          f"memory {weight_memory_bytes(quant) / weight_memory_bytes(model):.1%}")
    assert abs(ppl / base - 1) <= tolerance
    assert weight_memory_bytes(quant) <= memory * weight_memory_bytes(model)
