"""The ``spms`` fixture: tokenizers the vocabulary tests build themselves (milliseconds, once per session).

* ``base``: LLaMA-like: BPE, byte fallback, identity normalization, split digits, a user-defined (``<sep>``) and a
  control (``<ctrl>``) piece, trained on English prose, code and only four Chinese lines, so most Chinese
  characters fall back to bytes;
* ``zh``: a Chinese BPE model trained on ``corpus_zh.txt``;
* ``merged``: ``zh`` merged into ``base`` with the default MergeConfig, and its MergeReport (``report``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tencentpretrain.vocab.build import VocabBuildConfig, build_vocab
from tencentpretrain.vocab.merge import MergeReport, merge_tokenizers
from tests.vocab.helpers import ZH_CORPUS, base_config, read_lines, write_base_corpus


@dataclass(frozen=True)
class Tokenizers:
    base: str
    zh: str
    merged: str
    report: MergeReport
    directory: str


@pytest.fixture(scope="session")
def spms(tmp_path_factory) -> Tokenizers:
    d = tmp_path_factory.mktemp("spm")
    corpus = write_base_corpus(str(d / "base_corpus.txt"))
    base = build_vocab(base_config(corpus, str(d / "base.model"))).model_path
    zh = build_vocab(VocabBuildConfig(corpus_paths=(ZH_CORPUS,), output_model_path=str(d / "zh.model"),
                                      vocab_size=1200)).model_path
    merged = str(d / "merged.model")
    report = merge_tokenizers(base, zh, merged, zh_eval_lines=read_lines(ZH_CORPUS))
    return Tokenizers(base=base, zh=zh, merged=merged, report=report, directory=str(d))
