"""Corpora and tokenizer settings shared by the vocabulary tests."""

from __future__ import annotations

import os

from tencentpretrain.vocab.build import VocabBuildConfig

HERE = os.path.dirname(os.path.abspath(__file__))
ZH_CORPUS = os.path.join(HERE, "corpus_zh.txt")
EN_CORPUS = os.path.join(HERE, "corpus_en.txt")
BASE_ZH_LINES = 4  # Chinese lines the base model sees


def read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def base_config(corpus: str, output: str, **overrides) -> VocabBuildConfig:
    values = dict(
        corpus_paths=(corpus,), output_model_path=output, vocab_size=600, character_coverage=0.995,
        user_defined_symbols=("<sep>",), control_symbols=("<ctrl>",),
    )
    values.update(overrides)
    return VocabBuildConfig(**values)


def write_base_corpus(path: str) -> str:
    lines = read_lines(EN_CORPUS) + read_lines(ZH_CORPUS)[:BASE_ZH_LINES]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path
