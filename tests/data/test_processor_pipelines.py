"""Each new processor end to end: preprocess.py a tiny corpus -> pretrain.py a few CPU steps (the loss falls) -> the
final checkpoint loads strictly into a model built from the same config.

The configs are the original's models/bart, models/transformer (word + pos instead of ``sinusoidalpos``, which
another part of the work adds), models/rnn/bilstm (once with a transformer encoder in its place, once as shipped) and BERT/GPT-2 shapes with the targets each processor trains,
written to tmp_path so that the tests do not depend on which configs the repository ships.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tencentpretrain.checkpoint import load_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import ConfigError
from tencentpretrain.models.model import build_model
from tests.data.family_corpus import DOCUMENTS, write_documents, write_lines, write_vocab
from tests.families.test_pipeline import _falls, _preprocess, _reload, _train, _vocab_size

BART = {"emb_size": 768, "feedforward_size": 3072, "hidden_size": 768, "hidden_act": "gelu", "heads_num": 12,
        "layers_num": 6, "decoder_layers_num": 6, "max_seq_length": 1024, "dropout": 0.1, "data_processor": "bart",
        "embedding": ["word", "pos"], "tgt_embedding": ["word", "pos"], "share_embedding": True,
        "encoder": "transformer", "mask": "fully_visible", "decoder": "transformer", "target": ["lm"],
        "tie_weights": True, "has_lmtarget_bias": True}
TRANSFORMER = {**BART, "hidden_act": "relu", "data_processor": "mt", "share_embedding": False,
               "has_lmtarget_bias": False}
PEGASUS = {**BART, "hidden_act": "relu", "data_processor": "gsg", "remove_embedding_layernorm": True,
           "layernorm_positioning": "pre"}
BERT_CLS = {"emb_size": 768, "feedforward_size": 3072, "hidden_size": 768, "hidden_act": "gelu", "heads_num": 12,
            "layers_num": 12, "max_seq_length": 512, "dropout": 0.1, "data_processor": "cls",
            "embedding": ["word", "pos", "seg"], "encoder": "transformer", "mask": "fully_visible",
            "target": ["cls"]}
PREFIX_LM = {**BERT_CLS, "data_processor": "prefixlm", "mask": "causal_with_prefix", "target": ["lm"]}
BILM = {**BERT_CLS, "data_processor": "bilm", "embedding": ["word"], "remove_embedding_layernorm": True,
        "mask": "fully_visible", "target": ["bilm"]}


def _config(tmp: Path, name: str, values: dict, **changes) -> str:
    path = tmp / f"{name}_config.json"
    path.write_text(json.dumps({**values, **changes}), encoding="utf-8")
    return str(path)


@pytest.fixture
def vocab(tmp_path: Path) -> Path:
    return write_vocab(tmp_path / "vocab.txt")


def _tsv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _pairs(tmp: Path, repeat: int) -> Path:
    """source<TAB>target: the first sentence of each document -> the next one."""
    return _tsv(tmp / "pairs.tsv", [f"{doc[0]}\t{doc[1]}" for doc in DOCUMENTS * repeat])


def _labelled(tmp: Path, repeat: int) -> Path:
    """label<TAB>text (and a few pairs): label 1 for Chinese documents, 0 for English ones."""
    rows = []
    for doc in DOCUMENTS * repeat:
        label = int(doc[0][0] > "z")
        rows += [f"{label}\t{s}" for s in doc] + [f"{label}\t{doc[0]}\t{doc[-1]}"]
    return _tsv(tmp / "labelled.tsv", rows)


def _run(tmp: Path, vocab: Path, dataset: Path, config: str, *extra: str, steps: int = 25, ratio: float = 0.9,
         **overrides) -> list[str]:
    losses, out = _train(tmp, dataset, config, "--vocab_path", str(vocab), "--tokenizer", "bert",
                         "--max_seq_length", "64", *extra, steps=steps)
    _falls(losses, ratio)
    return _reload(config, out, _vocab_size(vocab), max_seq_length=64, **overrides)


@pytest.mark.slow
def test_bart_denoising(tmp_path, vocab):
    dataset = _preprocess(tmp_path, write_documents(tmp_path / "docs.txt", repeat=4), "bart", "--seq_length", "32",
                          "--dup_factor", "2", vocab=vocab)
    keys = _run(tmp_path, vocab, dataset, _config(tmp_path, "bart", BART), "--decoder_layers_num", "2",
                decoder_layers_num=2)
    assert "decoder.transformer_decoder.1.context_attn.final_linear.weight" in keys


@pytest.mark.slow
def test_gsg_gap_sentences_random(tmp_path, vocab):
    dataset = _preprocess(tmp_path, write_documents(tmp_path / "docs.txt", repeat=6), "gsg", "--seq_length", "48",
                          "--tgt_seq_length", "24", "--sentence_selection_strategy", "random", vocab=vocab)
    keys = _run(tmp_path, vocab, dataset, _config(tmp_path, "pegasus", PEGASUS), "--decoder_layers_num", "2",
                decoder_layers_num=2)
    assert "target.lm.output_layer.bias" in keys


@pytest.mark.slow
def test_mt_translation_pairs(tmp_path, vocab):
    dataset = _preprocess(tmp_path, _pairs(tmp_path, 8), "mt", "--seq_length", "24", "--tgt_seq_length", "24",
                          "--tgt_vocab_path", str(vocab), vocab=vocab)
    keys = _run(tmp_path, vocab, dataset, _config(tmp_path, "transformer", TRANSFORMER), "--decoder_layers_num", "2",
                decoder_layers_num=2)
    assert "tgt_embedding.word.embedding.weight" in keys


@pytest.mark.slow
def test_mt_with_a_target_vocabulary_of_its_own(tmp_path, vocab):
    """--tgt_vocab_path: the decoder's embedding and the output layer get the target vocabulary's rows (the
    original's model_builder), found by pretrain.py in the dataset's manifest."""
    tgt_vocab = write_vocab(tmp_path / "tgt_vocab.txt")
    with open(tgt_vocab, "a", encoding="utf-8") as f:
        f.write("".join(f"[unused{i}]\n" for i in range(9)))
    source_size, target_size = _vocab_size(vocab), _vocab_size(tgt_vocab)
    dataset = _preprocess(tmp_path, _pairs(tmp_path, 8), "mt", "--seq_length", "24", "--tgt_seq_length", "24",
                          "--tgt_vocab_path", str(tgt_vocab), vocab=vocab)
    config = _config(tmp_path, "transformer", TRANSFORMER)
    losses, out = _train(tmp_path, dataset, config, "--vocab_path", str(vocab), "--tokenizer", "bert",
                         "--tgt_vocab_path", str(tgt_vocab), "--max_seq_length", "64", "--decoder_layers_num", "2",
                         steps=25)
    _falls(losses, 0.9)
    with pytest.raises(ConfigError, match="not the one .* was built with"):  # the original's flag, checked
        _train(tmp_path, dataset, config, "--vocab_path", str(vocab), "--tgt_vocab_path", str(vocab), steps=1)
    model_config = load_model_config(config).replace(emb_size=32, hidden_size=32, feedforward_size=64, heads_num=4,
                                                     layers_num=2, decoder_layers_num=2, dropout=0.0,
                                                     max_seq_length=64)
    with torch.device("meta"):
        model = build_model(model_config, source_size, init=False, tgt_vocab_size=target_size)
    load_checkpoint(model, out)  # strict
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert state["embedding.word.embedding.weight"].shape == (source_size, 32)
    assert state["tgt_embedding.word.embedding.weight"].shape == (target_size, 32)
    assert state["target.lm.output_layer.weight"].shape == (target_size, 32)


@pytest.mark.slow
def test_prefixlm(tmp_path, vocab):
    dataset = _preprocess(tmp_path, _pairs(tmp_path, 8), "prefixlm", "--seq_length", "48", vocab=vocab)
    keys = _run(tmp_path, vocab, dataset, _config(tmp_path, "prefixlm", PREFIX_LM))
    assert "target.lm.output_layer.weight" in keys


@pytest.mark.slow
def test_cls_pretraining(tmp_path, vocab):
    dataset = _preprocess(tmp_path, _labelled(tmp_path, 4), "cls", "--seq_length", "32", vocab=vocab)
    keys = _run(tmp_path, vocab, dataset, _config(tmp_path, "cls", BERT_CLS), "--labels_num", "2", steps=20,
                ratio=0.9, labels_num=2)
    assert "target.cls.linear_2.weight" in keys


@pytest.mark.slow
def test_cls_mlm_pretraining(tmp_path, vocab):
    dataset = _preprocess(tmp_path, _labelled(tmp_path, 4), "cls_mlm", "--seq_length", "32", "--dynamic_masking",
                          vocab=vocab)
    config = _config(tmp_path, "cls_mlm", BERT_CLS, data_processor="cls_mlm", target=["mlm", "cls"])
    keys = _run(tmp_path, vocab, dataset, config, "--labels_num", "2", steps=40, ratio=0.95, labels_num=2)
    assert {"target.mlm.linear_2.weight", "target.cls.linear_2.weight"} <= set(keys)


@pytest.mark.slow
def test_bilm(tmp_path, vocab):
    dataset = _preprocess(tmp_path, write_lines(tmp_path / "lines.txt", repeat=8), "bilm", "--seq_length", "16",
                          vocab=vocab)
    keys = _run(tmp_path, vocab, dataset, _config(tmp_path, "bilm", BILM), steps=40)
    assert "target.bilm.output_layer.weight" in keys


@pytest.mark.slow
def test_bilm_with_the_originals_bilstm_config(tmp_path, vocab):
    """models/rnn/bilstm_config.json as shipped (shrunk by the TINY flags): the bilstm encoder's two halves."""
    dataset = _preprocess(tmp_path, write_lines(tmp_path / "lines.txt", repeat=8), "bilm", "--seq_length", "16",
                          vocab=vocab)
    config = "models/rnn/bilstm_config.json"
    losses, out = _train(tmp_path, dataset, config, "--vocab_path", str(vocab), "--tokenizer", "bert",
                         "--max_seq_length", "64", steps=40, lr="2e-2")  # an LSTM wants a larger step than attention
    _falls(losses, 0.9)
    keys = _reload(config, out, _vocab_size(vocab), max_seq_length=64)
    assert "target.bilm.output_layer.weight" in keys and any(k.startswith("encoder.rnn_backward.") for k in keys)


@pytest.mark.slow
def test_mlm_full_sentences(tmp_path, vocab):
    dataset = _preprocess(tmp_path, write_lines(tmp_path / "lines.txt", repeat=8), "mlm", "--seq_length", "32",
                          "--full_sentences", "--dup_factor", "2", vocab=vocab)
    config = _config(tmp_path, "roberta", BERT_CLS, data_processor="mlm", target=["mlm"])
    keys = _run(tmp_path, vocab, dataset, config, ratio=0.95)
    assert "target.mlm.linear_2.weight" in keys
