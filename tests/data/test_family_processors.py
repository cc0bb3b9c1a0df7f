"""The bert/albert/mlm/t5/vit processors: stored records, masking statistics, static vs dynamic masking, resume,
span corruption round trip, images, and independence from --processes_num."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.data.builder import build_dataset
from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import FLAG_WORD_START, IndexedDataset
from tencentpretrain.data.loader import BatchLoader, Seq2SeqBatch
from tencentpretrain.data.masking import MaskingSpec, SpanMasking, WordEncoder, mask_spans
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.tokenizers import TokenizerConfig, build_tokenizer
from tests.data.family_corpus import sentences, write_documents, write_lines, write_vocab
from tests.helpers import REPO_ROOT


@pytest.fixture
def vocab(tmp_path: Path) -> Path:
    return write_vocab(tmp_path / "vocab.txt")


def _build(tmp: Path, vocab: Path, corpus: Path, processor: str, name: str | None = None, chunk_bytes=None, **opts):
    path = tmp / (name or f"{processor}.pt")
    config = DataConfig(corpus_path=str(corpus), dataset_path=str(path), data_processor=processor, **opts)
    build_dataset(config, TokenizerConfig(tokenizer="bert", vocab_path=str(vocab)), chunk_bytes=chunk_bytes)
    return path


def _bytes(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def test_whole_word_encoding_keeps_the_ids_and_marks_word_starts(vocab):
    tokenizer = build_tokenizer(TokenizerConfig(tokenizer="bert", vocab_path=str(vocab)))
    encoder = WordEncoder(tokenizer, whole_word=True)
    for sentence in sentences() + ["walking cats 北京walks"]:
        ids, flags = encoder.encode(sentence)
        assert ids.tolist() == tokenizer.encode(sentence)  # segmenting does not change the tokenization
    ids, flags = encoder.encode("walking cats")  # walk ##ing -> unk? the vocabulary has ##ing and ##s only
    pieces = [tokenizer.id_to_piece(i) for i in ids]
    for piece, flag in zip(pieces, flags):
        assert bool(flag & FLAG_WORD_START) == (not piece.startswith("##"))
    ids, flags = encoder.encode("北京是中国的首都")
    assert flags[0] == FLAG_WORD_START and 1 <= int(flags.sum()) < len(ids)  # some characters continue a word
    plain_ids, plain_flags = WordEncoder(tokenizer, whole_word=False).encode("北京是中国的首都")
    assert plain_ids.tolist() == ids.tolist() and (plain_flags == FLAG_WORD_START).all()


def test_mlm_masking_statistics_static_and_dynamic(tmp_path, vocab):
    corpus = write_lines(tmp_path / "lines.txt", repeat=30)
    static = _build(tmp_path, vocab, corpus, "mlm", seq_length=24, dup_factor=1)
    loader = BatchLoader(static, 60, seed=5, shuffle=False)
    batch = next(loader)
    specials = torch.tensor([0, 1, 2, 3, 4])
    candidates = (batch.seg > 0) & ~torch.isin(batch.tgt, specials)
    share = batch.loss_mask.sum().item() / candidates.sum().item()
    assert 0.12 < share < 0.2, share
    assert not (batch.loss_mask & ~candidates).any()  # [CLS]/[SEP]/padding are never masked
    changed = batch.loss_mask & (batch.src != batch.tgt)
    to_mask = (batch.src == 4) & batch.loss_mask
    assert 0.7 < to_mask.sum().item() / batch.loss_mask.sum().item() < 0.9  # 80% [MASK]
    assert changed.sum() >= to_mask.sum()
    assert torch.equal(batch.src[~batch.loss_mask], batch.tgt[~batch.loss_mask])
    # Static: the next epoch masks the same way. Dynamic: new masks, each a function of (seed, epoch, index).
    loader.epoch, loader.offset = 1, 0
    assert torch.equal(next(loader).src, batch.src)
    dynamic = _build(tmp_path, vocab, corpus, "mlm", name="dyn.pt", seq_length=24, dynamic_masking=True)
    d0 = next(BatchLoader(dynamic, 60, seed=5, shuffle=False))
    later = BatchLoader(dynamic, 60, seed=5, shuffle=False)
    later.epoch = 1
    d1 = next(later)
    assert torch.equal(d0.tgt, d1.tgt) and not torch.equal(d0.src, d1.src)


def test_span_masking_masks_whole_spans_with_geometric_lengths():
    """SpanBERT: spans of consecutive units, lengths geometric and cut at max_length, about 15% of the
    candidates predicted, one 80/10/10 choice per span."""
    spec = MaskingSpec(mask_id=4, vocab_size=1000, special_ids=(0, 1, 2, 3))
    pool, settings = spec.random_pool(), SpanMasking(geo_prob=0.2, max_length=10)
    tokens = np.arange(10, 410)  # 400 candidate tokens, every one its own unit
    flags = np.full(400, FLAG_WORD_START, dtype=np.uint8)
    candidates = np.ones(400, dtype=bool)
    lengths, shares, uniform = [], [], []
    for seed in range(200):
        masked, scored = mask_spans(tokens, flags, candidates, np.random.default_rng(seed), spec, pool, settings)
        shares.append(scored.mean())
        assert np.array_equal(masked[~scored], tokens[~scored])
        edges = np.flatnonzero(np.diff(np.concatenate(([0], scored.astype(int), [0]))))
        for start, end in zip(edges[::2], edges[1::2]):  # maximal runs; adjacent spans may merge
            lengths.append(end - start)
            run = masked[start:end]
            if end - start >= 3:
                uniform.append(bool((run == 4).all() or (run != 4).all()))
    assert all(0.13 <= s <= 0.15 for s in shares), (min(shares), max(shares))
    assert 2.5 < np.mean(lengths) < 6.0  # geometric(0.2) cut at 10 has mean 3.6; merged neighbours add a little
    # One choice per span: runs of 3+ are all [MASK] or none (a choice per token would give about 52%); only
    # neighbouring spans that merged into one run can mix.
    assert np.mean(uniform) > 0.85, np.mean(uniform)
    # Whole words: a span never takes part of a unit.
    word_flags = np.zeros(400, dtype=np.uint8)
    word_flags[::4] = FLAG_WORD_START  # 100 words of 4 tokens
    _, scored = mask_spans(tokens, word_flags, candidates, np.random.default_rng(0), spec, pool, settings)
    assert (scored.reshape(100, 4).all(1) == scored.reshape(100, 4).any(1)).all()


def test_span_masking_reaches_the_batches(tmp_path, vocab):
    corpus = write_lines(tmp_path / "lines.txt", repeat=30)
    spans = _build(tmp_path, vocab, corpus, "mlm", seq_length=24, dup_factor=1, span_masking=True,
                   span_geo_prob=0.3, span_max_length=4)
    assert IndexedDataset(spans).options["span_masking"] == {"geo_prob": 0.3, "max_length": 4}
    plain = _build(tmp_path, vocab, corpus, "mlm", name="plain.pt", seq_length=24, dup_factor=1)
    a, b = next(BatchLoader(spans, 60, seed=5, shuffle=False)), next(BatchLoader(plain, 60, seed=5, shuffle=False))
    assert torch.equal(a.tgt, b.tgt) and not torch.equal(a.loss_mask, b.loss_mask)
    with pytest.raises(ConfigError, match="span_geo_prob"):
        DataConfig(corpus_path="c", dataset_path="d", span_geo_prob=0.0)


def test_dynamic_masking_resumes_exactly_and_ignores_batch_composition(tmp_path, vocab):
    dataset = _build(tmp_path, vocab, write_lines(tmp_path / "l.txt", repeat=6), "mlm", seq_length=16,
                     dynamic_masking=True)
    loader = BatchLoader(dataset, 4, seed=9)
    for _ in range(5):
        next(loader)
    state = loader.state_dict()
    expected = [next(loader) for _ in range(6)]  # crosses an epoch boundary
    resumed = BatchLoader(dataset, 4, seed=9)
    resumed.load_state_dict(state)
    for want in expected:
        got = next(resumed)
        assert torch.equal(got.src, want.src) and torch.equal(got.loss_mask, want.loss_mask)
    # The same instance is masked identically whatever batch it lands in (here: batch size 4 vs 2, two ranks).
    wide = next(BatchLoader(dataset, 4, seed=9))
    ranks = [next(BatchLoader(dataset, 2, seed=9, rank=r, world_size=2)) for r in range(2)]
    assert torch.equal(torch.cat([r.src for r in ranks]), wide.src)


def test_bert_pairs_nsp_and_sop(tmp_path, vocab):
    corpus = write_documents(tmp_path / "docs.txt", repeat=10)
    dataset = _build(tmp_path, vocab, corpus, "bert", seq_length=32, dup_factor=2, short_seq_prob=0.0)
    stored = IndexedDataset(dataset)
    assert stored.manifest["format_version"] == 2 and stored.token_flags is not None
    batch = next(BatchLoader(dataset, len(stored), seed=1, shuffle=False))
    labels = batch.tgt["sp"]
    assert 0.3 < labels.float().mean().item() < 0.7  # about half are true continuations
    for row in range(len(stored)):
        tokens = batch.tgt["mlm"][row]
        seg = batch.seg[row]
        n = int((seg > 0).sum())
        a_end = int((seg == 1).sum())
        assert tokens[0] == 2 and tokens[a_end - 1] == 3 and tokens[n - 1] == 3  # [CLS] A [SEP] B [SEP]
        assert (seg[:a_end] == 1).all() and (seg[a_end:n] == 2).all() and (seg[n:] == 0).all()
        if labels[row] == 1:  # the stored pair, as it was
            assert tokens[:n].tolist() == stored[row][0].tolist()
    sop = _build(tmp_path, vocab, corpus, "albert", seq_length=32, dup_factor=2, short_seq_prob=0.0)
    batch = next(BatchLoader(sop, len(stored), seed=1, shuffle=False))
    for row in range(len(stored)):
        ids = stored[row][0].tolist()
        got = batch.tgt["mlm"][row][: len(ids)].tolist()
        if batch.tgt["sp"][row] == 1:
            assert got == ids
        else:  # B [SEP] A: the same tokens, the two sentences swapped
            a_end = ids.index(3)
            assert got == [2] + ids[a_end + 1 : -1] + [3] + ids[1:a_end] + [3]


def test_documents_and_lines_do_not_depend_on_processes(tmp_path, vocab):
    corpus = write_documents(tmp_path / "docs.txt", repeat=5)
    one = _build(tmp_path, vocab, corpus, "bert", name="a.pt", seq_length=32, processes_num=1, whole_word_masking=True)
    two = _build(tmp_path, vocab, corpus, "bert", name="b.pt", seq_length=32, processes_num=2, chunk_bytes=97,
                 whole_word_masking=True)
    assert _bytes(one) == _bytes(two)
    assert IndexedDataset(one).manifest["counts"]["documents"] == 30


def test_t5_sentinel_corruption_round_trip(tmp_path, vocab):
    """The original's T5 scheme: masked runs -> one sentinel each in src; tgt_in = [CLS] s0 span0 s1 span1 ... sK
    [SEP] with sentinels in vocabulary order; replacing each sentinel of src by its span gives the stored tokens."""
    dataset = _build(tmp_path, vocab, write_lines(tmp_path / "l.txt", repeat=3), "t5", seq_length=24)
    stored = IndexedDataset(dataset)
    batch = next(BatchLoader(dataset, len(stored), seed=2, shuffle=False))
    assert isinstance(batch, Seq2SeqBatch) and batch.src.shape[1] == 24
    sentinels = stored.options["sentinel_ids"]
    cls_id, sep_id = stored.manifest["tokenizer"]["bos_id"], stored.manifest["tokenizer"]["eos_id"]
    for row in range(len(stored)):
        src = batch.src[row][batch.seg[row] > 0].tolist()
        tgt_in = batch.tgt_in[row][batch.tgt_seg[row] > 0].tolist()
        n = len(tgt_in)
        assert tgt_in[0] == cls_id and tgt_in[-1] == sep_id
        assert batch.tgt[row, : n - 1].tolist() == tgt_in[1:]
        assert batch.loss_mask[row].nonzero().flatten().tolist() == list(range(n - 1))
        used = [t for t in tgt_in if t in sentinels]
        assert used == sentinels[: len(used)] and len(used) >= 2  # in order, plus the closing one
        assert [t for t in src if t in sentinels] == used[:-1]
        spans, current = {}, None  # sentinel -> the tokens it replaced
        for token in tgt_in[1:-2]:
            if token in sentinels:
                current = token
                spans[current] = []
            else:
                spans[current].append(token)
        rebuilt = [t for s in src for t in (spans[s] if s in sentinels else [s])]
        assert rebuilt == stored[row][0].tolist()
        assert all(spans.values())


def test_model_targets_are_checked(tmp_path, vocab):
    dataset = _build(tmp_path, vocab, write_lines(tmp_path / "l.txt", repeat=2), "mlm", seq_length=16)
    bert = load_model_config(f"{REPO_ROOT}/models/bert/base_config.json")  # targets mlm + sp
    with pytest.raises(ConfigError, match="sp"):
        BatchLoader(dataset, 2, model_config=bert)
    BatchLoader(dataset, 2, model_config=bert.replace(target=("mlm",)))


def _images(tmp: Path, rows: list[str], size=(6, 5)) -> Path:
    from PIL import Image

    (tmp / "img").mkdir(exist_ok=True)
    for i in range(3):
        Image.fromarray(np.full((size[1], size[0], 3), 40 * i, dtype=np.uint8)).save(tmp / "img" / f"{i}.png")
    tsv = tmp / "images.tsv"
    tsv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tsv


def test_vit_images_labels_and_errors(tmp_path):
    pytest.importorskip("PIL")
    tsv = _images(tmp_path, ["label\tpath", "0\timg/0.png", "img/1.png\t2", f"1\t{tmp_path}/img/2.png"])
    path = tmp_path / "vit.pt"
    build_dataset(DataConfig(corpus_path=str(tsv), dataset_path=str(path), data_processor="vit", image_height=4,
                             image_width=4), TokenizerConfig())
    stored = IndexedDataset(path)
    assert len(stored) == 3 and stored.labels.tolist() == [0, 2, 1]
    assert stored.manifest["counts"]["skipped"] == {"header": 1} and stored[1][0].tolist() == [40] * 48
    config = load_model_config(f"{REPO_ROOT}/models/vit/base-16-224_config.json").replace(
        image_height=4, image_width=4, patch_size=2, max_seq_length=5, labels_num=3)
    batch = next(BatchLoader(path, 3, seed=0, shuffle=False, model_config=config))
    assert batch.src.shape == (3, 3, 4, 4) and batch.seg.shape == (3, 5) and batch.tgt.tolist() == [0, 2, 1]
    torch.testing.assert_close(batch.src[1], torch.full((3, 4, 4), (40 / 255 - 0.5) / 0.5))
    with pytest.raises(ConfigError, match="--image_height 8"):
        BatchLoader(path, 3, model_config=config.replace(image_height=8, image_width=8))
    bad = _images(tmp_path, ["0\timg/0.png", "1\timg/missing.png"])
    with pytest.raises(DataError, match=r"images.tsv:2: image not found"):
        build_dataset(DataConfig(corpus_path=str(bad), dataset_path=str(tmp_path / "bad.pt"), data_processor="vit"),
                      TokenizerConfig())
