"""run_classifier_siamese / run_classifier_siamese_infer: the original's dual keys, both config forms, learning a
pair relation, pretrained single-stream weights in both streams, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from tencentpretrain.checkpoint import load_state_dict, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.finetune import siamese
from tencentpretrain.models.model import build_model
from tencentpretrain.tokenizers import build_tokenizer
from tests.finetune.conftest import TINY_BERT, sentiment_sentence

STREAM = {k: TINY_BERT[k] for k in ("emb_size", "feedforward_size", "hidden_size", "hidden_act", "heads_num",
                                    "layers_num", "max_seq_length", "embedding", "encoder", "mask")}


def dual_config(tmp_path: Path, *, tie: bool = True, **stream_changes) -> str:
    """A tiny version of the original's models/sbert/base_config.json."""
    stream = {**STREAM, "dropout": 0.0, **stream_changes}
    config = {"stream_0": stream, "stream_1": stream, "dropout": 0.0, "embedding": ["dual"], "encoder": "dual",
              "pooling": "max", "tie_weights": tie}
    path = tmp_path / f"sbert_tiny_{tie}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return str(path)


def write_pair_tsv(path: Path, n: int, seed: int, *, with_label: bool = True) -> Path:
    """label = 2 * (sentiment of text_a) + (sentiment of text_b): four classes that need both streams."""
    rng = random.Random(seed)
    lines = ["label\ttext_a\ttext_b" if with_label else "text_a\ttext_b"]
    for _ in range(n):
        a, b = rng.randint(0, 1), rng.randint(0, 1)
        texts = f"{sentiment_sentence(rng, a)}\t{sentiment_sentence(rng, b)}"
        lines.append(f"{2 * a + b}\t{texts}" if with_label else texts)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def pair_files(tmp_path) -> dict[str, str]:
    return {name: str(write_pair_tsv(tmp_path / f"{name}.tsv", n, seed))
            for name, n, seed in (("train", 300, 31), ("dev", 60, 32), ("test", 80, 33))}


def _train_args(files, vocab_path, config_path, out, *extra):
    return ["--vocab_path", vocab_path, "--config_path", config_path, "--train_path", files["train"],
            "--dev_path", files["dev"], "--test_path", files["test"], "--output_model_path", str(out),
            "--epochs_num", "6", "--batch_size", "16", "--learning_rate", "1e-3", "--report_steps", "5", *extra]


def _accuracy(caplog) -> list[float]:
    return [float(r.getMessage().split()[2]) for r in caplog.records if r.getMessage().startswith("Acc.")]


def _original_keys(layers: int, tie_layout: bool = True) -> list[str]:
    """The state keys the original's SiameseClassifier has for a dual config of ``layers`` transformer layers
    (read off the original, run on this machine)."""
    keys = []
    for i in (0, 1):
        keys += [f"embedding.dual.embedding_{i}.{k}" for k in (
            "layer_norm.gamma", "layer_norm.beta", "word.embedding.weight", "pos.embedding.weight",
            "seg.embedding.weight")]
        keys += [f"embedding.dual.stream_{i}_layer_norm.gamma", f"embedding.dual.stream_{i}_layer_norm.beta"]
    for i in (0, 1):
        for layer in range(layers):
            prefix = f"encoder.encoder_{i}.transformer.{layer}."
            keys += [prefix + f"self_attn.linear_layers.{j}.{p}" for j in range(3) for p in ("weight", "bias")]
            keys += [prefix + k for k in (
                "self_attn.final_linear.weight", "self_attn.final_linear.bias", "feed_forward.linear_1.weight",
                "feed_forward.linear_1.bias", "feed_forward.linear_2.weight", "feed_forward.linear_2.bias",
                "layer_norm_1.gamma", "layer_norm_1.beta", "layer_norm_2.gamma", "layer_norm_2.beta")]
    return keys + ["classifier.weight", "classifier.bias"]


def _model(config_path: str, vocab_path: str, argv=()) -> siamese.SiameseClassifier:
    parser = siamese.finetune_parser(None, adversarial=False)
    _, config, tokenizer = siamese.parse_siamese(parser, ["--config_path", config_path, "--vocab_path", vocab_path,
                                                          "--train_path", "x", "--dev_path", "y", *argv])
    return siamese.SiameseClassifier(config, tokenizer.vocab_size, labels_num=2)


@pytest.mark.parametrize("tie", [True, False])
def test_the_state_keys_are_the_originals_and_tie_weights_shares_the_streams(tmp_path, vocab_path, tie):
    model = _model(dual_config(tmp_path, tie=tie), vocab_path)
    state = model.state_dict()
    assert sorted(state) == sorted(_original_keys(layers=2))
    assert tuple(state["classifier.weight"].shape) == (2, 4 * 32)
    shared = model.embedding.dual.embedding_0 is model.embedding.dual.embedding_1
    assert shared == tie and (model.encoder.encoder_0 is model.encoder.encoder_1) == tie
    # the stream layer norms are never shared (as in the original)
    assert model.embedding.dual.stream_0_layer_norm is not model.embedding.dual.stream_1_layer_norm
    unique = {id(p) for p in model.parameters()}
    assert len(unique) == len(list(model.parameters()))


def test_a_single_stream_config_encodes_both_texts_with_one_shared_stream(bert_config_path, vocab_path):
    model = _model(bert_config_path, vocab_path)
    assert sorted(model.state_dict()) == sorted(_original_keys(layers=2))
    assert model.encoder.encoder_0 is model.encoder.encoder_1


def test_an_unknown_stream_encoder_is_refused_naming_the_config(tmp_path, vocab_path):
    with pytest.raises(ConfigError, match=r"sbert_tiny_True.json: stream_0: encoder: unknown encoder 'lsmt'"):
        _model(dual_config(tmp_path, encoder="lsmt"), vocab_path)
    config = json.loads(Path(dual_config(tmp_path)).read_text(encoding="utf-8"))
    del config["stream_1"]
    path = tmp_path / "one_stream.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"one_stream.json: a dual config .* needs the objects stream_1"):
        _model(str(path), vocab_path)


def test_pretrained_single_stream_weights_initialise_both_streams(tmp_path, vocab_path, bert_config_path):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    pretrained = build_model(load_model_config(bert_config_path), tokenizer.vocab_size)
    save_checkpoint(pretrained, str(tmp_path / "bert.bin"))
    model = _model(dual_config(tmp_path, tie=False), vocab_path)
    siamese.load_pretrained_siamese(model, str(tmp_path / "bert.bin"))
    ours, theirs = model.state_dict(), pretrained.state_dict()
    for i in (0, 1):
        for key in ("word.embedding.weight", "layer_norm.gamma", "seg.embedding.weight"):
            assert torch.equal(ours[f"embedding.dual.embedding_{i}.{key}"], theirs[f"embedding.{key}"])
        assert torch.equal(ours[f"encoder.encoder_{i}.transformer.1.self_attn.final_linear.weight"],
                           theirs["encoder.transformer.1.self_attn.final_linear.weight"])
        assert torch.equal(ours[f"embedding.dual.stream_{i}_layer_norm.gamma"], torch.ones(32))
    # a dual checkpoint (ours, or the original's) loads as stored, the classifier included
    save_checkpoint(model, str(tmp_path / "dual.bin"))
    again = _model(dual_config(tmp_path, tie=False), vocab_path)
    siamese.load_pretrained_siamese(again, str(tmp_path / "dual.bin"))
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


@pytest.mark.slow
def test_learns_from_both_texts_and_predicts_what_it_scored(pair_files, vocab_path, tmp_path, caplog):
    config_path = dual_config(tmp_path)
    out = tmp_path / "siamese.bin"
    caplog.set_level("INFO")
    siamese.finetune_main(_train_args(pair_files, vocab_path, config_path, out))
    scores = _accuracy(caplog)
    assert len(scores) == 7 and scores[-1] >= 0.9, scores
    assert sorted(load_state_dict(str(out))) == sorted(_original_keys(layers=2))

    rows = Path(pair_files["test"]).read_text(encoding="utf-8").splitlines()
    nolabel = tmp_path / "nolabel.tsv"
    nolabel.write_text("\n".join(r.split("\t", 1)[1] for r in rows) + "\n", encoding="utf-8")
    prediction = tmp_path / "prediction.tsv"
    siamese.infer_main(["--vocab_path", vocab_path, "--config_path", config_path, "--test_path", str(nolabel),
                        "--load_model_path", str(out), "--prediction_path", str(prediction), "--labels_num", "4",
                        "--output_prob", "--batch_size", "7"])
    lines = prediction.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\tprob" and len(lines) == len(rows)
    gold = [int(r.split("\t")[0]) for r in rows[1:]]
    pred = [int(line.split("\t")[0]) for line in lines[1:]]
    assert sum(p == g for p, g in zip(pred, gold)) / len(gold) == pytest.approx(scores[-1], abs=1e-4)


def test_a_file_without_text_b_is_refused_with_file_and_line(pair_files, vocab_path, tmp_path):
    train = tmp_path / "single.tsv"
    train.write_text("label\ttext_a\n1\t好\n", encoding="utf-8")
    out = tmp_path / "m.bin"
    with pytest.raises(DataError, match=r"single.tsv, line 1: the header \['label', 'text_a'\] lacks the column\(s\) \['text_b'\]"):
        siamese.finetune_main(_train_args({**pair_files, "train": str(train)}, vocab_path, dual_config(tmp_path),
                                          out, "--labels_num", "2"))
    assert not out.exists()


def test_inference_of_a_file_without_text_b_writes_nothing(tmp_path, vocab_path):
    config_path = dual_config(tmp_path)
    model = _model(config_path, vocab_path)
    save_checkpoint(model, str(tmp_path / "m.bin"))
    test = tmp_path / "single.tsv"
    test.write_text("text_a\n好\n", encoding="utf-8")
    prediction = tmp_path / "prediction.tsv"
    with pytest.raises(DataError, match=r"single.tsv, line 1: the header \['text_a'\] lacks the column\(s\) \['text_b'\]"):
        siamese.infer_main(["--vocab_path", vocab_path, "--config_path", config_path, "--test_path", str(test),
                            "--load_model_path", str(tmp_path / "m.bin"), "--prediction_path", str(prediction),
                            "--labels_num", "2"])
    assert not list(tmp_path.glob("prediction.tsv*"))


def test_lstm_streams_build_with_the_original_keys(tmp_path, vocab_path):
    """models/rnn/siamese_lstm_config.json's form: LSTM streams, tied (one encoder under both names)."""
    model = _model(dual_config(tmp_path, encoder="lstm"), vocab_path)
    keys = [k for k in model.state_dict() if k.startswith("encoder.")]
    assert sorted(keys) == sorted(f"encoder.encoder_{i}.rnn.{w}_{kind}_l{layer}" for i in (0, 1) for w in ("weight", "bias")
                                  for kind in ("ih", "hh") for layer in (0, 1))
    assert model.encoder.encoder_0 is model.encoder.encoder_1
    batch = {"src_a": torch.randint(1, 50, (2, 5)), "seg_a": torch.ones(2, 5, dtype=torch.long),
             "src_b": torch.randint(1, 50, (2, 7)), "seg_b": torch.ones(2, 7, dtype=torch.long),
             "label": torch.tensor([0, 1])}
    model(batch).loss.backward()
    assert model.encoder.encoder_0.rnn.weight_ih_l0.grad.abs().sum() > 0


@pytest.mark.parametrize("size", ["base", "large"])
def test_the_shipped_sbert_configs_build_a_siamese_classifier(size, vocab_path):
    from tests.helpers import REPO_ROOT

    config_path = str(Path(REPO_ROOT) / "models" / "sbert" / f"{size}_config.json")
    argv = ["--config_path", config_path, "--vocab_path", vocab_path, "--train_path", "t.tsv", "--dev_path", "d.tsv"]
    _, config, _ = siamese.parse_siamese(siamese.finetune_parser(None, adversarial=False), argv)
    with torch.device("meta"):
        model = siamese.SiameseClassifier(config, 21128, labels_num=2)
    hidden = {"base": 768, "large": 1024}[size]
    assert config.streams[0].hidden_size == config.streams[1].hidden_size == hidden
    assert any(k.startswith("encoder.encoder_1.") for k in model.state_dict())
