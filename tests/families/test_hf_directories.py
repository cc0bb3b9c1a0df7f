"""HF directories of any registered family where a model path is taken: load_model (logits equal transformers')
and pretrain.py --pretrained_model_path (trains exactly as from the converted checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import preprocess
from tencentpretrain.convert.hf import convert_hf_to_tencentpretrain
from tencentpretrain.convert.loading import load_model
from tencentpretrain.training.cli import main as pretrain
from tests.data.family_corpus import write_documents, write_vocab
from tests.training.test_resume import assert_same_weights

transformers = pytest.importorskip("transformers")


def _hf_bert(path: Path, vocab_size: int, **overrides):
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, architectures=["BertForPreTraining"],
                                     **overrides)
    torch.manual_seed(1)
    model = transformers.BertForPreTraining(config).eval()
    model.save_pretrained(path, max_shard_size="60KB")  # sharded; the tied decoder weight left out
    return model


def test_load_model_takes_an_hf_bert_directory(tmp_path):
    hf = _hf_bert(tmp_path / "bert", 97)
    ours = load_model(None, str(tmp_path / "bert"))
    assert ours.config.target == ("mlm", "sp") and not ours.training
    ids = torch.randint(5, 97, (2, 12))
    types = torch.tensor([[0] * 6 + [1] * 6, [0] * 4 + [1] * 8])
    with torch.no_grad():
        expected = hf(ids, token_type_ids=types).prediction_logits
        got = ours.logits(ids, types + 1)  # our segment = HF token type + 1
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_load_model_takes_an_hf_gpt2_directory(tmp_path):
    torch.manual_seed(2)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=89, n_embd=32, n_layer=2, n_head=4,
                                                              n_positions=32)).eval()
    hf.save_pretrained(tmp_path / "gpt2")
    ours = load_model(None, str(tmp_path / "gpt2"))
    ids = torch.randint(0, 89, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(ids), hf(ids).logits, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_pretrained_model_path_takes_an_hf_bert_directory(tmp_path):
    """MLM + next-sentence pretraining from an HF BERT directory equals pretraining from its conversion."""
    vocab = write_vocab(tmp_path / "vocab.txt")
    vocab_size = len(vocab.read_text(encoding="utf-8").splitlines())
    _hf_bert(tmp_path / "hf", vocab_size)
    converted, config_path = str(tmp_path / "bert.bin"), str(tmp_path / "bert_config.json")
    convert_hf_to_tencentpretrain(str(tmp_path / "hf"), converted, config_path=config_path)
    dataset = str(tmp_path / "bert.pt")
    assert preprocess.main(["--corpus_path", str(write_documents(tmp_path / "docs.txt", repeat=4)), "--dataset_path",
                            dataset, "--data_processor", "bert", "--tokenizer", "bert", "--vocab_path", str(vocab),
                            "--seq_length", "32", "--dup_factor", "2"]) == 0
    runs = {}
    for name, start in (("converted", converted), ("hf", str(tmp_path / "hf"))):
        out = str(tmp_path / f"{name}_out.bin")
        runs[name] = pretrain(["--dataset_path", dataset, "--config_path", config_path, "--pretrained_model_path",
                               start, "--vocab_path", str(vocab), "--tokenizer", "bert", "--output_model_path", out,
                               "--total_steps", "3", "--save_checkpoint_steps", "3", "--report_steps", "3",
                               "--batch_size", "4", "--learning_rate", "1e-3", "--seed", "3"])
    assert runs["hf"].losses == runs["converted"].losses
    assert_same_weights(str(tmp_path / "hf_out.bin"), str(tmp_path / "converted_out.bin"))
    assert os.path.getsize(tmp_path / "hf_out.bin") > 0
