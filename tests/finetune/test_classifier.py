"""run_classifier / run_classifier_infer: learning, the original's keys and files, dynamic padding, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import CheckpointError, DataError
from tencentpretrain.finetune import classifier
from tencentpretrain.finetune.adversarial import fgm_step, pgd_step
from tencentpretrain.finetune.classifier import Classifier, read_classification
from tencentpretrain.finetune.data import SpecialIds, pad_batch
from tencentpretrain.tokenizers import build_tokenizer
from tests.finetune.conftest import write_sentiment_tsv


def _train_args(files, vocab_path, config_path, out, *extra):
    return ["--vocab_path", vocab_path, "--config_path", config_path, "--train_path", files["train"],
            "--dev_path", files["dev"], "--test_path", files["test"], "--output_model_path", str(out),
            "--epochs_num", "3", "--batch_size", "16", "--learning_rate", "1e-3", "--report_steps", "5", *extra]


def _accuracy(caplog) -> list[float]:
    return [float(r.getMessage().split()[2]) for r in caplog.records if r.getMessage().startswith("Acc.")]


def test_fine_tunes_to_high_accuracy_and_predicts_what_it_scored(sentiment_files, vocab_path, bert_config_path,
                                                                 tmp_path, caplog):
    out = tmp_path / "classifier.bin"
    caplog.set_level("INFO")
    classifier.finetune_main(_train_args(sentiment_files, vocab_path, bert_config_path, out, "--epochs_num", "5"))
    scores = _accuracy(caplog)
    assert len(scores) == 6  # five dev evaluations, then the test set with the best model
    assert scores[-1] >= 0.9, scores
    keys = list(load_state_dict(str(out)))
    assert keys[-4:] == ["output_layer_1.weight", "output_layer_1.bias", "output_layer_2.weight", "output_layer_2.bias"]
    assert not any(k.startswith("target.") for k in keys)  # the pretraining heads are not part of a task model

    nolabel = tmp_path / "nolabel.tsv"
    rows = Path(sentiment_files["test"]).read_text(encoding="utf-8").splitlines()
    nolabel.write_text("\n".join(r.split("\t", 1)[1] for r in rows) + "\n", encoding="utf-8")
    prediction = tmp_path / "prediction.tsv"
    classifier.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path", str(nolabel),
                           "--load_model_path", str(out), "--prediction_path", str(prediction), "--labels_num", "2",
                           "--output_logits", "--output_prob", "--batch_size", "7"])
    lines = prediction.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\tlogits\tprob" and len(lines) == len(rows)
    gold = [int(r.split("\t")[0]) for r in rows[1:]]
    pred = [int(line.split("\t")[0]) for line in lines[1:]]
    correct = sum(p == g for p, g in zip(pred, gold))
    assert correct / len(gold) == pytest.approx(scores[-1], abs=1e-4)  # the infer script agrees with the test report
    for line in lines[1:]:
        label, logits, prob = line.split("\t")
        logits, prob = [float(v) for v in logits.split()], [float(v) for v in prob.split()]
        assert int(label) == max(range(2), key=logits.__getitem__)
        assert sum(prob) == pytest.approx(1.0, abs=1e-5)


def test_padding_to_the_batch_equals_padding_to_seq_length(vocab_path, bert_config_path, tmp_path):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    examples = read_classification(str(write_sentiment_tsv(tmp_path / "a.tsv", 6, 5, pair=True)), tokenizer, 64,
                                   labels_num=2)
    model = Classifier(load_model_config(bert_config_path), tokenizer.vocab_size, labels_num=2).eval()
    model.init_weights()
    pad = SpecialIds.of(tokenizer).pad
    tight = pad_batch(examples, {"src": pad})
    wide = {k: torch.nn.functional.pad(v, (0, 64 - v.shape[1]), value=pad if k == "src" else 0) if v.dim() == 2
            else v for k, v in tight.items()}
    assert tight["src"].shape[1] < 64 and set(tight["seg"].unique().tolist()) == {0, 1, 2}
    with torch.no_grad():
        torch.testing.assert_close(model(tight).logits, model(wide).logits, atol=1e-5, rtol=1e-5)


def test_a_tsv_without_header_is_refused_with_file_and_line(sentiment_files, vocab_path, bert_config_path, tmp_path):
    headless = tmp_path / "train.tsv"
    headless.write_text("\n".join(Path(sentiment_files["train"]).read_text(encoding="utf-8").splitlines()[1:]) + "\n",
                        encoding="utf-8")
    files = {**sentiment_files, "train": str(headless)}
    out = tmp_path / "model.bin"
    with pytest.raises(DataError, match=r"train.tsv, line 1: the header .* lacks the column\(s\) \['label', 'text_a'\]"):
        classifier.finetune_main(_train_args(files, vocab_path, bert_config_path, out))
    assert not out.exists()


def test_a_blank_line_between_examples_is_refused_and_trailing_ones_are_not(tmp_path):
    from tencentpretrain.finetune.data import read_tsv

    path = tmp_path / "a.tsv"
    path.write_text("label\ttext_a\n1\t好\n\n0\t差\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"a.tsv, line 3: blank line"):
        read_tsv(str(path), ("label", "text_a"))
    path.write_text("label\ttext_a\n1\t好\n0\t差\n\n\n", encoding="utf-8")
    assert [row.line for row in read_tsv(str(path), ("label", "text_a"))] == [2, 3]


def test_a_label_outside_labels_num_names_the_file_and_line(sentiment_files, vocab_path, bert_config_path, tmp_path):
    dev = tmp_path / "dev.tsv"
    rows = Path(sentiment_files["dev"]).read_text(encoding="utf-8").splitlines()
    rows[3] = "5\t" + rows[3].split("\t", 1)[1]
    dev.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev.tsv, line 4: the label 5 is outside 0..1 \(labels_num = 2\)"):
        classifier.finetune_main(_train_args({**sentiment_files, "dev": str(dev)}, vocab_path, bert_config_path,
                                             tmp_path / "m.bin", "--epochs_num", "1"))


def test_inference_refuses_a_model_of_another_shape_and_writes_nothing(sentiment_files, vocab_path, bert_config_path,
                                                                       tmp_path):
    out = tmp_path / "classifier.bin"
    classifier.finetune_main(_train_args(sentiment_files, vocab_path, bert_config_path, out, "--epochs_num", "1"))
    prediction = tmp_path / "prediction.tsv"
    with pytest.raises(CheckpointError, match="output_layer_2"):
        classifier.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path",
                               sentiment_files["test"], "--load_model_path", str(out), "--prediction_path",
                               str(prediction), "--labels_num", "3"])
    assert not prediction.exists() and not list(tmp_path.glob("prediction.tsv*"))


def test_pretrained_weights_initialise_the_encoder_and_the_head_stays_fresh(sentiment_files, vocab_path,
                                                                          bert_config_path, tmp_path):
    from tencentpretrain.checkpoint import save_checkpoint
    from tencentpretrain.models.model import build_model

    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    pretrained = build_model(load_model_config(bert_config_path), tokenizer.vocab_size)
    save_checkpoint(pretrained, str(tmp_path / "pretrained.bin"))
    from tencentpretrain.finetune.model import build_task_model

    torch.manual_seed(0)
    model = build_task_model(Classifier, load_model_config(bert_config_path), tokenizer.vocab_size,
                             str(tmp_path / "pretrained.bin"), labels_num=2)
    ours = model.state_dict()
    for key, value in pretrained.state_dict().items():
        if key.startswith(("embedding.", "encoder.")):
            assert torch.equal(ours[key], value), key
    # a checkpoint that lacks encoder weights is refused, naming them
    state = {k: v for k, v in pretrained.state_dict().items() if "transformer.1." not in k}
    save_checkpoint(state, str(tmp_path / "partial.bin"))
    with pytest.raises(CheckpointError, match="lacks 16 weight"):
        build_task_model(Classifier, load_model_config(bert_config_path), tokenizer.vocab_size,
                         str(tmp_path / "partial.bin"), labels_num=2)


def _adversarial_setup(vocab_path, bert_config_path, tmp_path):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    examples = read_classification(str(write_sentiment_tsv(tmp_path / "a.tsv", 8, 5)), tokenizer, 64, labels_num=2)
    torch.manual_seed(0)
    model = Classifier(load_model_config(bert_config_path), tokenizer.vocab_size, labels_num=2)
    model.init_weights()
    batch = pad_batch(examples, {"src": SpecialIds.of(tokenizer).pad})

    def backward():
        loss = model(batch).loss
        loss.backward()
        return loss

    return model, backward


def _expected_fgm_gradients(model, backward, size):
    """clean gradients + the gradients at embeddings moved by ``size`` along their normalised gradients."""
    backward()
    clean = {n: p.grad.clone() for n, p in model.named_parameters()}
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("embedding."):
                p.add_(clean[n] / clean[n].norm() * size)
    model.zero_grad()
    backward()
    expected = {n: clean[n] + p.grad for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(saved[n])
    model.zero_grad()
    return expected


@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_adversarial_step_adds_the_gradients_at_the_attacked_embeddings_then_restores(vocab_path, bert_config_path,
                                                                                     tmp_path, method):
    model, backward = _adversarial_setup(vocab_path, bert_config_path, tmp_path)
    expected = _expected_fgm_gradients(model, backward, 0.05)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    backward()
    if method == "fgm":
        fgm_step(model, backward, epsilon=0.05)
    else:  # one PGD attack inside the radius is an FGM attack of size alpha
        pgd_step(model, backward, k=1, epsilon=1.0, alpha=0.05)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n  # weights put back
        torch.testing.assert_close(p.grad, expected[n], atol=1e-6, rtol=1e-4)


def test_pgd_keeps_the_attack_within_epsilon(vocab_path, bert_config_path, tmp_path):
    model, backward = _adversarial_setup(vocab_path, bert_config_path, tmp_path)
    word = dict(model.named_parameters())["embedding.word.embedding.weight"]
    original = word.detach().clone()
    radius = []

    def watching_backward():
        radius.append((word.detach() - original).norm().item())
        return backward()

    backward()
    pgd_step(model, watching_backward, k=4, epsilon=0.1, alpha=0.08)
    assert radius[0] == pytest.approx(0.08, rel=1e-4) and max(radius) == pytest.approx(0.1, rel=1e-4)
    assert torch.equal(word, original)
