"""Each family end to end: preprocess.py a tiny corpus -> pretrain.py a few CPU steps (the loss falls) -> the final
checkpoint loads strictly into a model built from the same config, under the original TencentPretrain key names."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import preprocess
from tencentpretrain.checkpoint import load_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.models.model import build_model
from tencentpretrain.training.cli import main as pretrain
from tests.data.family_corpus import write_documents, write_lines, write_vocab
from tests.helpers import REPO_ROOT

TINY = ["--emb_size", "32", "--hidden_size", "32", "--feedforward_size", "64", "--heads_num", "4", "--layers_num", "2",
        "--dropout", "0.0"]


def _train(tmp: Path, dataset: Path, config: str, *extra: str, steps: int, lr: str = "3e-3") -> tuple[list[float], str]:
    out = str(tmp / "model.bin")
    result = pretrain(["--dataset_path", str(dataset), "--config_path", os.path.join(REPO_ROOT, config),
                       "--output_model_path", out, "--total_steps", str(steps), "--save_checkpoint_steps", str(steps),
                       "--report_steps", str(steps), "--batch_size", "8", "--learning_rate", lr, "--warmup", "0.1",
                       "--seed", "3", *TINY, *extra])
    return result.losses, out


def _falls(losses: list[float], ratio: float) -> None:
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < ratio * first, [round(x, 3) for x in losses]


def _reload(config: str, path: str, vocab_size: int, **overrides) -> list[str]:
    """Strict load of ``path`` into a fresh model of the config; returns its keys."""
    model_config = load_model_config(os.path.join(REPO_ROOT, config)).replace(
        emb_size=32, hidden_size=32, feedforward_size=64, heads_num=4, layers_num=2, dropout=0.0, **overrides)
    with torch.device("meta"):
        model = build_model(model_config, vocab_size, init=False)
    load_checkpoint(model, path)  # strict: every key present, nothing extra, shapes equal
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert sorted(state) == sorted(model.state_dict())
    return list(state)


def _preprocess(tmp: Path, corpus: Path, processor: str, *extra: str, vocab: Path | None = None) -> Path:
    dataset = tmp / f"{processor}.pt"
    tokenizer = ["--tokenizer", "bert", "--vocab_path", str(vocab)] if vocab else []
    code = preprocess.main(["--corpus_path", str(corpus), "--dataset_path", str(dataset), "--data_processor",
                            processor, *tokenizer, *extra])
    assert code == 0
    return dataset


@pytest.fixture
def vocab(tmp_path: Path) -> Path:
    return write_vocab(tmp_path / "vocab.txt")


def _vocab_size(vocab: Path) -> int:
    return len(vocab.read_text(encoding="utf-8").splitlines())


@pytest.mark.slow
def test_bert_sentence_pairs_with_whole_word_masking(tmp_path, vocab):
    dataset = _preprocess(tmp_path, write_documents(tmp_path / "docs.txt", repeat=4), "bert", "--seq_length", "32",
                          "--dup_factor", "2", "--whole_word_masking", vocab=vocab)
    losses, out = _train(tmp_path, dataset, "models/bert/tiny_config.json", "--vocab_path", str(vocab),
                         "--tokenizer", "bert", "--max_seq_length", "32", steps=25)
    _falls(losses, 0.92)
    keys = _reload("models/bert/tiny_config.json", out, _vocab_size(vocab), max_seq_length=32)
    for key in ("embedding.seg.embedding.weight", "embedding.layer_norm.gamma", "target.mlm.linear_1.weight",
                "target.mlm.layer_norm.gamma", "target.mlm.linear_2.bias", "target.sp.linear_1.weight",
                "target.sp.linear_2.weight", "encoder.transformer.1.layer_norm_2.beta"):
        assert key in keys, key


@pytest.mark.slow
def test_roberta_mlm_dynamic_masking(tmp_path, vocab):
    dataset = _preprocess(tmp_path, write_lines(tmp_path / "lines.txt", repeat=8), "mlm", "--seq_length", "32",
                          "--dynamic_masking", vocab=vocab)
    losses, out = _train(tmp_path, dataset, "models/bert/roberta_base_config.json", "--vocab_path", str(vocab),
                         "--tokenizer", "bert", "--max_seq_length", "32", steps=25)
    _falls(losses, 0.95)
    keys = _reload("models/bert/roberta_base_config.json", out, _vocab_size(vocab), max_seq_length=32)
    assert "target.mlm.linear_2.weight" in keys and not any(k.startswith("target.sp") for k in keys)


@pytest.mark.slow
def test_gpt2_lm(tmp_path, vocab):
    dataset = _preprocess(tmp_path, write_lines(tmp_path / "lines.txt", repeat=8), "lm", "--seq_length", "32",
                          vocab=vocab)
    losses, out = _train(tmp_path, dataset, "models/gpt2/config.json", "--vocab_path", str(vocab), "--tokenizer",
                         "bert", "--max_seq_length", "32", steps=20)
    _falls(losses, 0.9)
    keys = _reload("models/gpt2/config.json", out, _vocab_size(vocab), max_seq_length=32)
    assert {"embedding.pos.embedding.weight", "encoder.layer_norm.gamma", "target.lm.output_layer.weight"} <= set(keys)


@pytest.mark.slow
def test_t5_span_corruption(tmp_path, vocab):
    dataset = _preprocess(tmp_path, write_lines(tmp_path / "lines.txt", repeat=8), "t5", "--seq_length", "32",
                          "--tgt_seq_length", "16", "--dynamic_masking", vocab=vocab)
    losses, out = _train(tmp_path, dataset, "models/t5/small_config.json", "--vocab_path", str(vocab), "--tokenizer",
                         "bert", "--decoder_layers_num", "2", steps=25)
    _falls(losses, 0.8)
    keys = _reload("models/t5/small_config.json", out, _vocab_size(vocab), decoder_layers_num=2)
    assert "decoder.transformer_decoder.1.context_attn.final_linear.weight" in keys


def write_images(tmp: Path, count: int = 24) -> Path:
    """Tiny PNGs of two classes (reddish / bluish with noise) and their TSV (with a header, relative paths)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp / "images").mkdir()
    lines = ["label\tpath"]
    for i in range(count):
        label = i % 2
        pixels = rng.integers(0, 120, size=(12, 10, 3))
        pixels[..., 0 if label == 0 else 2] += 130
        Image.fromarray(pixels.astype(np.uint8)).save(tmp / "images" / f"{i}.png")
        lines.append(f"{label}\timages/{i}.png")
    tsv = tmp / "train.tsv"
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tsv


@pytest.mark.slow
def test_vit_image_classification(tmp_path):
    pytest.importorskip("PIL")
    dataset = _preprocess(tmp_path, write_images(tmp_path), "vit", "--image_height", "16", "--image_width", "16")
    losses, out = _train(tmp_path, dataset, "models/vit/base-16-224_config.json", "--image_height", "16",
                         "--image_width", "16", "--patch_size", "4", "--max_seq_length", "17", "--labels_num", "2",
                         steps=20, lr="2e-3")
    _falls(losses, 0.7)
    keys = _reload("models/vit/base-16-224_config.json", out, 1, image_height=16, image_width=16, patch_size=4,
                   max_seq_length=17, labels_num=2)
    assert keys[:3] == ["embedding.patch.cls_emb", "embedding.patch.projection.weight",
                        "embedding.patch.projection.bias"]
    assert "target.cls.linear_2.weight" in keys
