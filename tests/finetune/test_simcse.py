"""run_simcse: pair reading (supervised / unsupervised), the contrastive loss by hand, learning similarities that
rank the dev pairs, bad input."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import DataError
from tencentpretrain.finetune import simcse
from tencentpretrain.tokenizers import build_tokenizer
from tests.finetune.conftest import sentiment_sentence


def write_pairs(path: Path, n: int, seed: int, *, same_only: bool) -> Path:
    """label 1 for two sentences of the same sentiment, 0 otherwise (``same_only``: positive pairs only)."""
    rng = random.Random(seed)
    lines = ["label\ttext_a\ttext_b"]
    for _ in range(n):
        a = rng.randint(0, 1)
        b = a if same_only or rng.random() < 0.5 else 1 - a
        lines.append(f"{int(a == b)}\t{sentiment_sentence(rng, a)}\t{sentiment_sentence(rng, b)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tokenizer(vocab_path):
    return build_tokenizer("bert", vocab_path=vocab_path)


def test_unlabelled_texts_pair_with_themselves_and_labelled_ones_with_text_b(tokenizer, tmp_path):
    unsupervised = tmp_path / "u.tsv"
    unsupervised.write_text("text_a\ttext_b\n好的\t差的\n", encoding="utf-8")
    [example] = simcse.read_simcse(str(unsupervised), tokenizer, 16)
    assert example["src_a"] == example["src_b"] and "label" not in example
    supervised = tmp_path / "s.tsv"
    supervised.write_text("label\ttext_a\ttext_b\n0.5\t好的\t差\n", encoding="utf-8")
    [example] = simcse.read_simcse(str(supervised), tokenizer, 16)
    assert len(example["src_a"]) == 4 and len(example["src_b"]) == 3 and example["label"] == 0.5


def test_the_loss_is_the_in_batch_cross_entropy_of_cosines_over_the_temperature(tokenizer, bert_config_path,
                                                                                 tmp_path):
    path = write_pairs(tmp_path / "p.tsv", 3, 1, same_only=False)
    examples = simcse.read_simcse(str(path), tokenizer, 32)
    torch.manual_seed(0)
    model = simcse.SimCSE(load_model_config(bert_config_path), tokenizer.vocab_size, temperature=0.1).eval()
    model.init_weights()
    batch = simcse.collate_for(tokenizer)(examples)
    with torch.no_grad():
        output = model(batch)
        u = [model.features(batch["src_a"][i:i + 1], batch["seg_a"][i:i + 1])[0] for i in range(3)]
        v = [model.features(batch["src_b"][i:i + 1], batch["seg_b"][i:i + 1])[0] for i in range(3)]
    cosine = [[float(torch.dot(a, b) / (a.norm() * b.norm())) for b in v] for a in u]
    expected = sum(-math.log(math.exp(cosine[i][i] / 0.1) / sum(math.exp(c / 0.1) for c in cosine[i]))
                   for i in range(3)) / 3
    assert output.loss.item() == pytest.approx(expected, rel=1e-4)
    assert output.logits.tolist() == pytest.approx([cosine[i][i] for i in range(3)], abs=1e-5)


@pytest.mark.slow
def test_supervised_pairs_learn_similarities_that_rank_the_dev_pairs(vocab_path, bert_config_path, tmp_path, caplog):
    train = write_pairs(tmp_path / "train.tsv", 320, 51, same_only=True)
    dev = write_pairs(tmp_path / "dev.tsv", 80, 52, same_only=False)
    out = tmp_path / "simcse.bin"
    caplog.set_level("INFO")
    simcse.finetune_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--train_path", str(train),
                          "--dev_path", str(dev), "--output_model_path", str(out), "--epochs_num", "3",
                          "--batch_size", "32", "--learning_rate", "1e-3", "--report_steps", "5", "--eval_steps", "4",
                          "--pooling", "mean", "--temperature", "0.1"])
    scores = [float(r.getMessage().split()[-1]) for r in caplog.records
              if r.getMessage().startswith("Spearman's correlation:")]
    assert len(scores) == 3 * 3  # steps 4 and 8 and the last (10) of each epoch
    assert max(scores) >= 0.8, scores  # labels are 0/1: perfect separation of 80 pairs scores about 0.87
    assert all(k.startswith(("embedding.", "encoder.")) for k in load_state_dict(str(out)))  # no head


def test_a_dev_set_without_labels_is_refused_with_file_and_line(vocab_path, bert_config_path, tmp_path):
    train = write_pairs(tmp_path / "train.tsv", 8, 51, same_only=True)
    dev = tmp_path / "dev.tsv"
    dev.write_text("text_a\ttext_b\n好\t差\n", encoding="utf-8")
    out = tmp_path / "m.bin"
    with pytest.raises(DataError, match=r"dev.tsv, line 1: the header \['text_a', 'text_b'\] lacks the column\(s\) \['label'\]"):
        simcse.finetune_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--train_path",
                              str(train), "--dev_path", str(dev), "--output_model_path", str(out), "--epochs_num", "1",
                              "--batch_size", "8"])
    assert not out.exists()


@pytest.mark.slow
def test_unsupervised_pairs_differ_by_dropout_and_the_contrastive_loss_falls(vocab_path, bert_config_path, tmp_path,
                                                                            caplog):
    rng = random.Random(61)
    train = tmp_path / "train.tsv"
    train.write_text("text_a\n" + "\n".join(sentiment_sentence(rng, rng.randint(0, 1)) for _ in range(256)) + "\n",
                     encoding="utf-8")
    dev = write_pairs(tmp_path / "dev.tsv", 40, 62, same_only=False)
    caplog.set_level("INFO")
    simcse.finetune_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--train_path", str(train),
                          "--dev_path", str(dev), "--output_model_path", str(tmp_path / "m.bin"), "--epochs_num",
                          "2", "--batch_size", "32", "--learning_rate", "1e-3", "--report_steps", "4",
                          "--dropout", "0.1", "--pooling", "mean"])
    losses = [float(r.getMessage().split()[-1]) for r in caplog.records if "Avg loss" in r.getMessage()]
    assert len(losses) == 4  # 8 steps per epoch, reported every 4
    assert losses[-1] < 0.5 * losses[0], losses  # each text becomes told apart from the batch (1.50 -> 0.04 when written)
