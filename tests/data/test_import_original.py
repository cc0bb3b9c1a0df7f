"""Importing the original TencentPretrain's dataset.pt (a pickle stream) into a dataset directory."""

from __future__ import annotations

import os
import pickle

import pytest

from tencentpretrain.data.builder import build_dataset
from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import IndexedDataset
from tencentpretrain.data.import_original import import_original_dataset
from tencentpretrain.errors import DataError
from tencentpretrain.tokenizers import TokenizerConfig, build_tokenizer
from tests.helpers import REPO_ROOT

SPM = os.path.join(REPO_ROOT, "tests", "assets", "tiny_spm.model")
CORPUS = os.path.join(REPO_ROOT, "tests", "assets", "tiny_spm_corpus.txt")
SEQ = 24


def write_original_lm(corpus: str, path: str, seq_length: int) -> None:
    """The original's lm records, written as its preprocess.py does (one pickle.dump per record): each line is
    <s> ids </s>, cut into chunks of seq_length + 1; the last chunk of a document keeps its padding count."""
    sp = build_tokenizer(TokenizerConfig(spm_model_path=SPM))
    with open(corpus, encoding="utf-8") as src, open(path, "wb") as out:
        for line in src:
            if not line.strip():
                continue  # the original made <s></s> samples of blank lines; this version skips them
            ids = [sp.bos_id] + sp.encode(line.strip()) + [sp.eos_id]
            for start in range(0, len(ids), seq_length + 1):
                chunk = ids[start : start + seq_length + 1]
                pickle.dump(((chunk, seq_length + 1 - len(chunk)), [len(chunk)]), out)


def test_lm_records_import_to_exactly_what_preprocess_builds(tmp_path):
    original = str(tmp_path / "dataset.pt")
    write_original_lm(CORPUS, original, SEQ)
    imported = str(tmp_path / "imported")
    import_original_dataset(original, DataConfig(corpus_path=original, dataset_path=imported, seq_length=SEQ),
                            TokenizerConfig(spm_model_path=SPM))
    built = str(tmp_path / "built")
    build_dataset(DataConfig(corpus_path=CORPUS, dataset_path=built, seq_length=SEQ),
                  TokenizerConfig(spm_model_path=SPM))
    for name in ("tokens.bin", "index.npy"):
        with open(os.path.join(imported, name), "rb") as a, open(os.path.join(built, name), "rb") as b:
            assert a.read() == b.read(), name
    ours, theirs = IndexedDataset(imported), IndexedDataset(built)
    assert ours.manifest["tokenizer"] == theirs.manifest["tokenizer"]  # pretrain.py checks the tokenizer
    assert ours.manifest["counts"]["loss_tokens"] == theirs.manifest["counts"]["loss_tokens"]


@pytest.mark.parametrize("train_on_prompt", [False, True])
def test_sft_records_score_the_response(tmp_path, train_on_prompt):
    original = str(tmp_path / "dataset.pt")
    records = [([1, 50, 51, 52, 60, 61, 2], 4), ([1, 70, 80, 81, 82, 83], 2)]  # (src, prompt length incl. <s>)
    with open(original, "wb") as f:
        for src, prompt in records:
            pickle.dump(((src, SEQ - len(src)), [prompt, len(src)]), f)
    out = str(tmp_path / "sft")
    import_original_dataset(original, DataConfig(corpus_path=original, dataset_path=out, seq_length=SEQ,
                                                 data_processor="llm_sft", train_on_prompt=train_on_prompt),
                            TokenizerConfig(spm_model_path=SPM))
    data = IndexedDataset(out)
    assert len(data) == 2
    for i, (src, prompt) in enumerate(records):
        tokens, mask = data[i]
        assert tokens.tolist() == src
        assert mask.tolist() == [1 if train_on_prompt else 0] * prompt + [2] * (len(src) - prompt)


def test_foreign_or_mismatched_files_are_refused_and_leave_nothing(tmp_path):
    class Payload:  # a pickle that would run code when loaded with plain pickle
        def __reduce__(self):
            return (os.system, ("echo unsafe",))

    tok = TokenizerConfig(spm_model_path=SPM)
    bad = str(tmp_path / "bad.pt")
    with open(bad, "wb") as f:
        pickle.dump(Payload(), f)
    out = str(tmp_path / "out")
    with pytest.raises(DataError, match="record 1 is not a TencentPretrain dataset record"):
        import_original_dataset(bad, DataConfig(corpus_path=bad, dataset_path=out, seq_length=SEQ), tok)
    long = str(tmp_path / "long.pt")
    with open(long, "wb") as f:
        pickle.dump(((list(range(5, 5 + SEQ + 2)), 0), [SEQ + 2]), f)
    with pytest.raises(DataError, match="more than --seq_length"):
        import_original_dataset(long, DataConfig(corpus_path=long, dataset_path=out, seq_length=SEQ), tok)
    other = str(tmp_path / "other_tokenizer.pt")
    with open(other, "wb") as f:
        pickle.dump((([1, 699, 700, 2], SEQ - 3), [4]), f)  # id 700: a bigger vocabulary than the tiny one
    with pytest.raises(DataError, match="outside the tokenizer's 700 pieces"):
        import_original_dataset(other, DataConfig(corpus_path=other, dataset_path=out, seq_length=SEQ), tok)
    assert sorted(os.listdir(tmp_path)) == ["bad.pt", "long.pt", "other_tokenizer.pt"]  # no partial output
