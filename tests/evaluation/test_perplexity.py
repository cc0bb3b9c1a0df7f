"""Perplexity: windows, the shared loss sum, and parity with transformers on the same converted weights."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.evaluation.perplexity import (
    PerplexityConfig,
    WindowBatch,
    batch_windows,
    collate_windows,
    document_windows,
    evaluate_dataset_loss,
    evaluate_perplexity,
    read_documents,
)
from tencentpretrain.models.model import build_model
from tencentpretrain.tokenizers import build_tokenizer
from tests.helpers import REPO_ROOT, tiny_llama_config

SPM = f"{REPO_ROOT}/tests/assets/tiny_spm.model"
DOCS = [
    "中国的首都是北京，上海是中国最大的城市。",
    "The quick brown fox jumps over the lazy dog.",
    "短文",
    "自然语言处理是人工智能的一个重要方向，大规模语言模型在中文任务上的表现越来越好。" * 2,
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("sentencepiece", spm_model_path=SPM)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(3)
    return build_model(tiny_llama_config(), tokenizer.vocab_size).eval()


def direct_nll(model, ids: list[int]) -> tuple[float, int]:
    """Summed next-token NLL of ``ids`` in one forward pass (the reference)."""
    with torch.no_grad():
        logits = model.logits(torch.tensor([ids]))[0, :-1].float()  # (T-1, V)
    return float(F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum")), len(ids) - 1


@pytest.mark.parametrize(
    "length,seq_length,stride", [(2, 4, 4), (10, 4, 4), (10, 4, 1), (23, 8, 3), (9, 8, 8), (30, 7, 5)]
)
def test_windows_score_every_target_once_with_enough_context(length, seq_length, stride):
    ids = list(range(100, 100 + length))
    scored = []
    for w in document_windows(ids, seq_length, stride):
        assert 1 <= len(w.src) <= seq_length and w.tgt == [t + 1 for t in w.src]
        for pos in range(w.first_scored, len(w.src)):
            context = pos + 1  # inputs the prediction of this target sees
            target = w.tgt[pos]
            assert context >= min(seq_length - stride + 1, target - 100), (w, pos)
            scored.append(target)
    assert scored == ids[1:]


def test_sliding_window_equals_direct_computation_when_the_document_fits(model, tokenizer):
    ids = [tokenizer.bos_id] + tokenizer.encode(DOCS[3])
    assert len(ids) - 1 <= 128
    windows = list(document_windows(ids, 128, 16))
    assert len(windows) == 1 and windows[0].first_scored == 0
    loss_sum, tokens = evaluate_dataset_loss(model, [collate_windows(windows, tokenizer.pad_id)])
    expected, n = direct_nll(model, ids)
    assert tokens == n
    assert loss_sum == pytest.approx(expected, rel=1e-5)


def test_overlapping_windows_equal_per_window_direct_computation(model, tokenizer):
    ids = [tokenizer.bos_id] + tokenizer.encode(DOCS[3])  # ~100 tokens, windows of 16 moving by 5
    expected = 0.0
    for w in document_windows(ids, 16, 5):
        with torch.no_grad():
            logits = model.logits(torch.tensor([w.src]))[0].float()
        scored = slice(w.first_scored, None)
        expected += float(F.cross_entropy(logits[scored], torch.tensor(w.tgt[scored]), reduction="sum"))
    result = evaluate_perplexity(model, tokenizer, [DOCS[3]], PerplexityConfig(seq_length=16, stride=5, batch_size=3))
    assert result.tokens == len(ids) - 1 and result.windows > 10
    assert result.nll_sum == pytest.approx(expected, rel=1e-5)
    # and more context than non-overlapping windows gives a different (here: any) number, so stride matters
    plain = evaluate_perplexity(model, tokenizer, [DOCS[3]], PerplexityConfig(seq_length=16, batch_size=3))
    assert plain.tokens == result.tokens and plain.nll_sum != pytest.approx(result.nll_sum, rel=1e-6)


def test_batched_padded_windows_equal_one_at_a_time(model, tokenizer):
    config = dict(seq_length=24, stride=12)
    one = evaluate_perplexity(model, tokenizer, DOCS, PerplexityConfig(batch_size=1, **config))
    many = evaluate_perplexity(model, tokenizer, DOCS, PerplexityConfig(batch_size=5, **config))
    assert one.tokens == many.tokens
    assert many.nll_sum == pytest.approx(one.nll_sum, rel=1e-5)


def test_corpus_numbers_are_token_weighted_and_bits_per_character(model, tokenizer):
    result = evaluate_perplexity(model, tokenizer, DOCS, PerplexityConfig(seq_length=128))
    total, tokens = 0.0, 0
    for text in DOCS:
        nll, n = direct_nll(model, [tokenizer.bos_id] + tokenizer.encode(text))
        total, tokens = total + nll, tokens + n
    assert result.tokens == tokens and result.documents == 4 and result.windows == 4
    assert result.nll_sum == pytest.approx(total, rel=1e-5)
    assert result.loss == pytest.approx(total / tokens, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(total / tokens), rel=1e-5)
    characters = sum(len(t) for t in DOCS)
    assert result.characters == characters and result.bytes == sum(len(t.encode()) for t in DOCS)
    assert result.bits_per_character == pytest.approx(total / math.log(2) / characters, rel=1e-5)


def test_eos_is_scored_when_asked(model, tokenizer):
    without = evaluate_perplexity(model, tokenizer, DOCS[:2], PerplexityConfig(seq_length=64))
    with_eos = evaluate_perplexity(model, tokenizer, DOCS[:2], PerplexityConfig(seq_length=64, add_eos=True))
    assert with_eos.tokens == without.tokens + 2


def test_dataset_loss_is_plain_cross_entropy_and_restores_training_mode(tokenizer):
    torch.manual_seed(5)
    smoothed = build_model(tiny_llama_config(label_smoothing=0.1), tokenizer.vocab_size).train()
    ids = [tokenizer.bos_id] + tokenizer.encode(DOCS[0])
    batch = collate_windows(list(document_windows(ids, 64, 64)), tokenizer.pad_id)
    loss_sum, tokens = evaluate_dataset_loss(smoothed, [batch])
    assert smoothed.training
    smoothed.eval()
    assert loss_sum == pytest.approx(direct_nll(smoothed, ids)[0], rel=1e-5)
    # without a loss_mask attribute, every real token is scored
    no_mask = WindowBatch(batch.src, batch.tgt, batch.seg, None)
    assert evaluate_dataset_loss(smoothed, [no_mask]) == pytest.approx((loss_sum, tokens), rel=1e-6)


def test_batches_group_windows_of_similar_length():
    windows = [w for n in (3, 30, 4, 29) for w in document_windows(list(range(n)), 8, 8)]
    batches = list(batch_windows(windows, 2, pad_id=0))
    assert sum(int(b.loss_mask.sum()) for b in batches) == 2 + 29 + 3 + 28
    assert sum(int(b.seg.sum()) for b in batches) == sum(len(w.src) for w in windows)


def test_read_documents_text_and_jsonl(tmp_path):
    text = tmp_path / "c.txt"
    text.write_text("第一篇\n\n second \r\n", encoding="utf-8")
    assert read_documents(str(text)) == ["第一篇", " second "]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(json.dumps({"text": "甲"}, ensure_ascii=False) + "\n" + json.dumps({"content": "乙"}) + "\n")
    with pytest.raises(DataError, match=r"c.jsonl:2: .*'text'"):
        read_documents(str(jsonl))
    jsonl.write_text(json.dumps({"content": "乙"}, ensure_ascii=False) + "\n")
    assert read_documents(str(jsonl), "jsonl", text_key="content") == ["乙"]
    jsonl.write_text('{"text": "甲"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"c.jsonl:2: not valid JSON"):
        read_documents(str(jsonl))


def test_config_is_validated():
    with pytest.raises(ConfigError, match="stride"):
        PerplexityConfig(seq_length=8, stride=9)
    with pytest.raises(ConfigError, match="seq_length"):
        PerplexityConfig(seq_length=0)


transformers = pytest.importorskip("transformers")


def _hf_twin(model):
    """transformers.LlamaForCausalLM with ``model``'s weights, through the production weight map."""
    from tencentpretrain.convert.families.llama import hf_config_from_model_config, llama_hf_weight_map

    config = model.config
    hf_config = transformers.LlamaConfig(**hf_config_from_model_config(config, model.vocab_size))
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    state = llama_hf_weight_map(config).to_external(model.state_dict())
    hf.load_state_dict(state, strict=True)
    return hf


def test_perplexity_matches_transformers_on_converted_weights(model, tokenizer):
    hf = _hf_twin(model)
    total = tokens = 0
    for text in DOCS:
        ids = torch.tensor([[tokenizer.bos_id] + tokenizer.encode(text)])
        with torch.no_grad():
            hf_loss = float(hf(ids, labels=ids).loss)  # mean over the document's shifted tokens
        ours = evaluate_perplexity(model, tokenizer, [text], PerplexityConfig(seq_length=128))
        assert ours.perplexity == pytest.approx(math.exp(hf_loss), rel=1e-4)
        total, tokens = total + hf_loss * (ids.shape[1] - 1), tokens + ids.shape[1] - 1
    # corpus level: exp of the token-weighted mean of transformers' per-document losses
    corpus = evaluate_perplexity(model, tokenizer, DOCS, PerplexityConfig(seq_length=128, batch_size=3))
    assert corpus.perplexity == pytest.approx(math.exp(total / tokens), rel=1e-4)


def test_sliding_window_matches_transformers_window_by_window(model, tokenizer):
    hf = _hf_twin(model)
    ids = [tokenizer.bos_id] + tokenizer.encode(DOCS[3])
    total = 0.0
    for w in document_windows(ids, 20, 7):
        labels = torch.tensor([[-100] * w.first_scored + w.tgt[w.first_scored :]])
        with torch.no_grad():
            logits = hf(torch.tensor([w.src])).logits[0].float()
        total += float(F.cross_entropy(logits, labels[0], ignore_index=-100, reduction="sum"))
    ours = evaluate_perplexity(model, tokenizer, [DOCS[3]], PerplexityConfig(seq_length=20, stride=7))
    assert ours.nll_sum == pytest.approx(total, rel=1e-4)


def test_dataset_loss_reads_the_training_loaders_batches(model):
    """The trainer's evaluation passes the loader's Batch (SFT rows: seg 2 on response tokens, loss on them)."""
    from tencentpretrain.data.loader import Batch

    torch.manual_seed(9)
    src = torch.randint(3, 700, (2, 10))
    tgt = torch.roll(src, -1, 1)
    seg = torch.tensor([[1] * 4 + [2] * 6, [1] * 3 + [2] * 4 + [0] * 3])
    loss_mask = seg == 2
    loss_sum, tokens = evaluate_dataset_loss(model, [Batch(src, tgt, seg, loss_mask)])
    expected = 0.0
    for row in range(2):
        n = int((seg[row] > 0).sum())
        with torch.no_grad():
            logits = model.logits(src[row : row + 1, :n])[0].float()
        scored = loss_mask[row, :n]
        expected += float(F.cross_entropy(logits[scored], tgt[row, :n][scored], reduction="sum"))
    assert tokens == 10 and loss_sum == pytest.approx(expected, rel=1e-5)
