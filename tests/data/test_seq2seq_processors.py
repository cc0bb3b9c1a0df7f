"""The new processors' rules where the original's randomness cannot be matched (it drew from Python's global
``random``): expected values derived by hand from the original's rules (bart chunks and infilling, gsg gaps, the
t5 sentinel scheme), with our fixed seeds; plus their errors, options and the bilm target's loss."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tencentpretrain.config import ModelConfig
from tencentpretrain.data.builder import build_dataset
from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import FLAG_SEGMENT_B, FLAG_WORD_START, IndexedDataset
from tencentpretrain.data.loader import BatchLoader
from tencentpretrain.data.processors.bart import chunks_under, collapse_mask_runs
from tencentpretrain.data.processors.gsg import gap_sentences
from tencentpretrain.data.processors.seq2seq import split_pair
from tencentpretrain.data.processors.t5 import sentinel_corruption
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.targets.bilm import BilmTarget
from tencentpretrain.tokenizers import TokenizerConfig, build_tokenizer
from tests.data.family_corpus import DOCUMENTS, write_documents, write_lines, write_vocab

MASK = 4  # [MASK] in the family vocabulary


@pytest.fixture
def vocab(tmp_path: Path) -> Path:
    return write_vocab(tmp_path / "vocab.txt")


def _build(tmp: Path, vocab: Path, corpus: Path, processor: str, name: str | None = None, **opts) -> IndexedDataset:
    path = tmp / (name or f"{processor}.pt")
    config = DataConfig(corpus_path=str(corpus), dataset_path=str(path), data_processor=processor, **opts)
    build_dataset(config, TokenizerConfig(tokenizer="bert", vocab_path=str(vocab)))
    return IndexedDataset(path)


def _pairs(dataset: IndexedDataset) -> list[tuple[list[int], list[int]]]:
    out = []
    for i in range(len(dataset)):
        src, _, tgt = split_pair(np.asarray(dataset[i][0]), np.asarray(dataset.flags(i)))
        out.append((src.tolist(), tgt.tolist()))
    return out


# ---------------------------------------------------------------------------------------------- bart
def test_bart_chunks_follow_the_original_rule():
    sentences = [(np.arange(n), np.ones(n, np.uint8)) for n in (3, 4, 2, 6, 1)]
    # room 8: 3+4 = 7 < 8; +2 = 9 >= 8 -> new chunk; 2+6 = 8 >= 8 -> new chunk; 6+1 = 7 < 8
    chunks = chunks_under(sentences, 8)
    assert [[len(s[0]) for s in c] for c in chunks] == [[3, 4], [2], [6, 1]]


def test_collapse_mask_runs():
    ids = np.asarray([2, 4, 4, 7, 4, 8, 4, 4, 4, 3])
    assert collapse_mask_runs(ids, 4).tolist() == [2, 4, 7, 4, 8, 4, 3]


def test_bart_pairs_permute_sentences_and_infill(tmp_path, vocab):
    dataset = _build(tmp_path, vocab, write_documents(tmp_path / "d.txt", repeat=2), "bart", seq_length=40,
                     dup_factor=3)
    tokenizer = build_tokenizer("bert", vocab_path=str(vocab))
    pairs = _pairs(dataset)
    assert len(pairs) == 3 * 2 * len(DOCUMENTS)  # every document fits one chunk of 38 tokens
    permuted = 0
    for k, (src, tgt) in enumerate(pairs):
        doc = DOCUMENTS[(k // 3) % len(DOCUMENTS)]
        sentences = [tokenizer.encode(s) for s in doc]
        assert tgt == [2, *(t for s in sentences for t in s), 3]  # [CLS] the sentences in order [SEP]
        assert src[0] == 2 and src[-1] == 3 and sorted(src) == sorted(tgt)
        permuted += src != tgt
    assert permuted >= len(pairs) // 3  # the copies are permuted independently
    loader = BatchLoader(dataset.path, len(dataset), seed=1, shuffle=False)
    first, second = next(loader), next(loader)  # epochs 0 and 1
    assert first.tgt_in.shape[1] == 39 and torch.equal(first.tgt_in, second.tgt_in)
    assert not torch.equal(first.src, second.src)  # new masks every epoch, as the original's loader drew them
    changed = 0
    for row, (src, _) in enumerate(pairs):
        masked = first.src[row][first.seg[row] > 0].tolist()
        assert not any(a == b == MASK for a, b in itertools.pairwise(masked))  # runs collapsed to one [MASK]
        assert masked[0] == 2 and masked[-1] == 3 and len(masked) <= len(src)
        assert first.seg[row].sum() == len(masked)  # seg ends where the collapsed source ends
        changed += masked != src
    assert changed >= len(pairs) - 2


@pytest.mark.slow  # worker processes
def test_bart_does_not_depend_on_processes(tmp_path, vocab):
    corpus = write_documents(tmp_path / "d.txt", repeat=3)
    one = _build(tmp_path, vocab, corpus, "bart", name="a.pt", seq_length=24)
    config = DataConfig(corpus_path=str(corpus), dataset_path=str(tmp_path / "b.pt"), data_processor="bart",
                        seq_length=24, processes_num=2)
    build_dataset(config, TokenizerConfig(tokenizer="bert", vocab_path=str(vocab)), chunk_bytes=97)
    assert _pairs(one) == _pairs(IndexedDataset(tmp_path / "b.pt"))


# ---------------------------------------------------------------------------------------------- gsg
def test_gap_sentences_lead_and_random():
    rng = np.random.default_rng(0)
    assert gap_sentences(10, "lead", rng) == {0, 1, 2}
    assert gap_sentences(1, "lead", rng) == set()  # round(0.3) = 0
    for _ in range(20):
        gaps = gap_sentences(7, "random", rng)  # round(2.1) = 2, never the last sentence
        assert len(gaps) == 2 and max(gaps) < 6


def test_gsg_pairs_by_hand(tmp_path, vocab):
    """Lead gaps of a 4-sentence document: round(1.2) = 1 gap, the first sentence."""
    corpus = tmp_path / "d.txt"
    corpus.write_text("北京\n上海\n长城\n天气\n", encoding="utf-8")
    dataset = _build(tmp_path, vocab, corpus, "gsg", seq_length=16, tgt_seq_length=8, dup_factor=1)
    ids = build_tokenizer("bert", vocab_path=str(vocab)).encode
    assert _pairs(dataset) == [([2, MASK, *ids("上海"), *ids("长城"), *ids("天气"), 3], [2, *ids("北京"), 3])]
    # A source room of 6 tokens: [MASK] + 2 + 2 fills it (4 < 6, then 4 + 2 >= 6 starts a new pair with 天气,
    # which has no gap, so it is not emitted).
    dataset = _build(tmp_path, vocab, corpus, "gsg", name="short.pt", seq_length=8, tgt_seq_length=8, dup_factor=1)
    assert _pairs(dataset) == [([2, MASK, *ids("上海"), *ids("长城"), 3], [2, *ids("北京"), 3])]


def test_gsg_random_copies_differ(tmp_path, vocab):
    dataset = _build(tmp_path, vocab, write_documents(tmp_path / "d.txt", repeat=3), "gsg", seq_length=64,
                     tgt_seq_length=32, dup_factor=4, sentence_selection_strategy="random")
    pairs = _pairs(dataset)
    assert len({tuple(tgt) for _, tgt in pairs}) > len(DOCUMENTS)
    for src, tgt in pairs:
        assert src.count(MASK) >= 1 and len(tgt) > 2


# ---------------------------------------------------------------------------------------------- t5
def test_sentinel_corruption_by_hand():
    tokens = np.asarray([2, 11, 12, 13, 14, 15, 16, 3])  # [CLS] x1..x6 [SEP]
    masked = np.asarray([0, 0, 1, 1, 0, 1, 0, 0], dtype=bool)
    src, decoder = sentinel_corruption(tokens, masked, [90, 91, 92], 2, 3)
    assert src.tolist() == [2, 11, 90, 14, 91, 16, 3]
    assert decoder.tolist() == [2, 90, 12, 13, 91, 15, 92, 3]
    # More spans than sentinels: the last one is reused.
    src, decoder = sentinel_corruption(tokens, np.asarray([0, 1, 0, 1, 0, 1, 0, 0], bool), [90, 91], 2, 3)
    assert src.tolist() == [2, 90, 12, 91, 14, 91, 16, 3]
    assert decoder.tolist() == [2, 90, 11, 91, 13, 91, 15, 91, 3]


def _t5_runs(dataset: IndexedDataset, seed: int = 3) -> list[tuple[int, list[tuple[int, int]]]]:
    """(instance, [(start, end) of each masked run in the stored tokens]) of a batch of every instance, rebuilt
    from src and tgt_in: each sentinel of src stands for the tokens after it in tgt_in."""
    batch = next(BatchLoader(dataset.path, len(dataset), seed=seed, shuffle=False))
    sentinels = set(dataset.options["sentinel_ids"])
    out = []
    for row in range(len(dataset)):
        spans: list[int] = []
        for token in batch.tgt_in[row][batch.tgt_seg[row] > 0].tolist()[1:-2]:
            if token in sentinels:
                spans.append(0)
            else:
                spans[-1] += 1
        runs, pos, k = [], 0, 0
        for token in batch.src[row][batch.seg[row] > 0].tolist():
            if token in sentinels:
                runs.append((pos, pos + spans[k]))
                pos, k = pos + spans[k], k + 1
            else:
                pos += 1
        assert pos == len(dataset[row][0])
        out.append((row, runs))
    return out


def test_t5_whole_word_and_span_masking_act_on_sentinels(tmp_path, vocab):
    corpus = write_lines(tmp_path / "l.txt", repeat=4)
    plain = _build(tmp_path, vocab, corpus, "t5", name="plain.pt", seq_length=64)
    spans = _build(tmp_path, vocab, corpus, "t5", name="spans.pt", seq_length=64, span_masking=True)
    words = _build(tmp_path, vocab, corpus, "t5", name="words.pt", seq_length=64, whole_word_masking=True)

    def mean_run(dataset):
        return np.mean([end - start for _, runs in _t5_runs(dataset) for start, end in runs])

    assert mean_run(spans) > 1.5 * mean_run(plain)  # geometric spans of words, each run one sentinel
    multi_token = 0
    for row, runs in _t5_runs(words):
        flags = np.asarray(words.flags(row))
        for start, end in runs:  # a masked run starts and ends at word boundaries
            assert flags[start] & FLAG_WORD_START and (end == len(flags) or flags[end] & FLAG_WORD_START)
            multi_token += not (flags[start + 1 : end] & FLAG_WORD_START).all()
    assert multi_token > 0  # some runs are multi-token words (Chinese words of several characters)


# ---------------------------------------------------------------------------------------------- mt / cls / prefixlm
def test_mt_target_tokenizer_and_bad_lines(tmp_path, vocab):
    tgt_vocab = tmp_path / "tgt_vocab.txt"
    tgt_vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\ncat\ndog\n", "utf-8")
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("北京\tthe cat\n\n上海\tthe dog dog\n", encoding="utf-8")
    dataset = _build(tmp_path, vocab, corpus, "mt", seq_length=8, tgt_seq_length=3, tgt_vocab_path=str(tgt_vocab))
    src_ids = build_tokenizer("bert", vocab_path=str(vocab)).encode
    assert _pairs(dataset) == [([2, *src_ids("北京"), 3], [2, 4, 5, 3]), ([2, *src_ids("上海"), 3], [2, 4, 6, 6])]
    assert dataset.options["tgt_tokenizer"]["vocab_size"] == 7 and dataset.manifest["counts"]["skipped"] == {
        "empty_line": 1}
    corpus.write_text("北京\tthe cat\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.tsv:2: expected source<TAB>target"):
        _build(tmp_path, vocab, corpus, "mt", name="bad.pt")
    dataset = _build(tmp_path, vocab, corpus, "mt", name="skip.pt", skip_bad_lines=True)
    assert len(dataset) == 1 and dataset.manifest["counts"]["skipped"] == {"bad_fields": 1}


def test_cls_rejects_a_bad_label_and_prefixlm_skips_long_prompts(tmp_path, vocab):
    corpus = tmp_path / "labelled.tsv"
    corpus.write_text("1\t北京\nlabel\ttext\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"labelled.tsv:2: the label 'label' is not an integer"):
        _build(tmp_path, vocab, corpus, "cls")
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text(f"{DOCUMENTS[0][0]}\t北京\n北京\t上海\n", encoding="utf-8")
    dataset = _build(tmp_path, vocab, corpus, "prefixlm", seq_length=8)
    assert len(dataset) == 1 and dataset.manifest["counts"]["skipped"] == {"prompt_too_long": 1}
    flags = np.asarray(dataset.flags(0))
    assert (flags & FLAG_SEGMENT_B).tolist() == [0, 0, 0, 0, 2, 2, 2]  # [CLS] 北 京 [SEP] | 上 海 [SEP]


def test_seq2seq_processors_need_a_decoder(tmp_path, vocab):
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("北京\t上海\n" * 4, encoding="utf-8")
    dataset = _build(tmp_path, vocab, corpus, "mt", seq_length=8)
    encoder_only = ModelConfig(emb_size=8, hidden_size=8, feedforward_size=8, heads_num=2, layers_num=1)
    with pytest.raises(ConfigError, match="no \"decoder\""):
        BatchLoader(dataset.path, 2, model_config=encoder_only)


# ---------------------------------------------------------------------------------------------- mlm --full_sentences
@pytest.mark.slow  # worker processes
def test_mlm_full_sentences_packs_and_copies(tmp_path, vocab):
    corpus = write_lines(tmp_path / "l.txt", repeat=2)
    packed = _build(tmp_path, vocab, corpus, "mlm", name="p.pt", seq_length=16, full_sentences=True, dup_factor=2)
    tokenizer = build_tokenizer("bert", vocab_path=str(vocab))
    stream = [t for line in corpus.read_text("utf-8").splitlines() for t in (2, *tokenizer.encode(line), 3)]
    chunks = [stream[i : i + 16] for i in range(0, len(stream), 16)]
    if len(chunks[-1]) == 1:
        chunks.pop()
    assert [packed[i][0].tolist() for i in range(len(packed))] == chunks * 2  # the packed corpus, twice
    flags = [np.asarray(packed.flags(i)) for i in range(len(packed))]
    assert all(f.dtype == np.uint8 and (f & FLAG_WORD_START).all() for f in flags)
    batch = next(BatchLoader(packed.path, len(packed), seed=1, shuffle=False))
    half = len(chunks)
    assert not torch.equal(batch.loss_mask[:half], batch.loss_mask[half:])  # each copy masked its own way
    assert packed.manifest["counts"]["instances"] == 2 * len(chunks)
    config = DataConfig(corpus_path=str(corpus), dataset_path=str(tmp_path / "q.pt"), data_processor="mlm",
                        seq_length=16, full_sentences=True, dup_factor=2, processes_num=2)
    build_dataset(config, TokenizerConfig(tokenizer="bert", vocab_path=str(vocab)), chunk_bytes=61)
    for name in ("tokens.bin", "token_flags.bin", "index.npy"):  # the same bytes, whatever --processes_num
        assert (tmp_path / "q.pt" / name).read_bytes() == (packed.path / name).read_bytes()


# ---------------------------------------------------------------------------------------------- bilm target
def test_bilm_target_loss_is_forward_plus_backward():
    torch.manual_seed(0)
    config = ModelConfig(emb_size=8, hidden_size=8, feedforward_size=8, heads_num=2, layers_num=1, target=("bilm",))
    target = BilmTarget(config, vocab_size=11)
    assert target.output_layer.weight.shape == (11, 4)
    hidden = torch.randn(2, 5, 8)
    tgt = torch.randint(0, 11, (2, 5, 2))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    out = target(hidden, tgt, mask)
    weight = target.output_layer.weight
    forward = F.cross_entropy(hidden[mask][:, :4] @ weight.T, tgt[mask][:, 0])
    backward = F.cross_entropy(hidden[mask][:, 4:] @ weight.T, tgt[mask][:, 1])
    torch.testing.assert_close(out.loss, forward + backward)
    torch.testing.assert_close(out.metrics["loss_backward_bilm"], backward.detach())
    with pytest.raises(ConfigError, match="even"):
        BilmTarget(config.replace(hidden_size=9, emb_size=9, heads_num=3), 11)


def test_a_target_vocabulary_of_its_own_needs_a_decoder_without_shared_embeddings():
    from tencentpretrain.models.model import build_model

    base = dict(emb_size=8, hidden_size=8, feedforward_size=8, heads_num=2, layers_num=1)
    seq2seq = ModelConfig(**base, decoder="transformer", tgt_embedding=("word",), tie_weights=True)
    model = build_model(seq2seq, 20, tgt_vocab_size=30)
    assert model.tgt_embedding.word.embedding.weight.shape == (30, 8)
    assert model.target.lm.output_layer.weight is model.tgt_embedding.word.embedding.weight  # tie_weights
    assert model.embedding.word.embedding.weight.shape == (20, 8)
    with pytest.raises(ConfigError, match="share_embedding"):
        build_model(seq2seq.replace(share_embedding=True), 20, tgt_vocab_size=30)
    with pytest.raises(ConfigError, match="needs a decoder"):
        build_model(ModelConfig(**base), 20, tgt_vocab_size=30)
    assert build_model(seq2seq.replace(share_embedding=True), 20, tgt_vocab_size=20).tgt_vocab_size == 20
