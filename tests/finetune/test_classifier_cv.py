"""run_classifier_cv / run_classifier_cv_infer: every training example predicted once by the fold model that did
not see it, the mean accuracy of the per-fold reports, the averaged test probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.finetune import classifier_cv
from tencentpretrain.finetune.classifier import Classifier, collate_for, read_classification
from tencentpretrain.finetune.classifier_cv import fold_bounds, fold_model_path, npy_path
from tencentpretrain.finetune.loop import predict
from tencentpretrain.finetune.model import load_finetuned_weights
from tencentpretrain.tokenizers import build_tokenizer
from tests.finetune.conftest import write_sentiment_tsv

FOLDS = 3


def fold_probs(model_path: str, examples, vocab_path: str, config_path: str) -> torch.Tensor:
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    model = Classifier(load_model_config(config_path), tokenizer.vocab_size, labels_num=2)
    load_finetuned_weights(model, model_path)
    return torch.cat([torch.softmax(logits, -1) for _, logits in predict(model, examples, 16,
                                                                        collate_for(tokenizer))]).double()


@pytest.mark.slow
def test_out_of_fold_features_and_mean_accuracy(vocab_path, bert_config_path, tmp_path, caplog):
    train = write_sentiment_tsv(tmp_path / "train.tsv", 250, 1)
    out, features = tmp_path / "classifier_model.bin", tmp_path / "train_features"
    caplog.set_level("INFO")
    classifier_cv.finetune_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--train_path",
                                 str(train), "--output_model_path", str(out), "--train_features_path", str(features),
                                 "--folds_num", str(FOLDS), "--epochs_num", "5", "--batch_size", "8",
                                 "--learning_rate", "1e-3", "--report_steps", "5"])
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Fold id: 2, Epoch id: 5, Training steps: 20, Avg loss: ") for m in messages)
    fold_accuracy = [float(m.split()[2]) for m in messages if m.startswith("Acc. (Correct/Total)")]
    assert len(fold_accuracy) == FOLDS  # one report per held-out fold, none per epoch
    mean_line = [m for m in messages if m.startswith("Acc. : ")]
    assert mean_line == [f"Acc. : {sum(fold_accuracy) / FOLDS:.4f}"]
    assert [m for m in messages if m.startswith("Marco F1 : ")]
    assert sum(fold_accuracy) / FOLDS >= 0.85, fold_accuracy

    saved = np.load(npy_path(str(features)))  # .npy appended, as numpy.save does
    assert saved.shape == (250, 2) and saved.dtype == np.float64
    np.testing.assert_allclose(saved.sum(1), 1.0, atol=1e-6)
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    examples = read_classification(str(train), tokenizer, 128, labels_num=2)
    gold = torch.tensor([e["label"] for e in examples])
    bounds = fold_bounds(len(examples), FOLDS)
    assert [b - a for a, b in bounds] == [84, 83, 83]
    for fold, (start, end) in enumerate(bounds):
        # row i is the prediction of the one model that was not trained on example i
        expected = fold_probs(fold_model_path(str(out), fold), examples[start:end], vocab_path, bert_config_path)
        np.testing.assert_allclose(saved[start:end], expected.numpy(), atol=1e-5)
        correct = (torch.from_numpy(saved[start:end]).argmax(1) == gold[start:end]).float().mean().item()
        assert correct == pytest.approx(fold_accuracy[fold], abs=1e-4)

    # inference: the mean of the fold models' probabilities on a TSV without labels
    test = write_sentiment_tsv(tmp_path / "test.tsv", 30, 5, with_label=False)
    classifier_cv.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path",
                              str(test), "--load_model_path", str(out), "--test_features_path",
                              str(tmp_path / "test_features.npy"), "--folds_num", str(FOLDS), "--labels_num", "2"])
    test_features = np.load(tmp_path / "test_features.npy")
    test_examples = read_classification(str(test), tokenizer, 128, labels_num=2, with_labels=False)
    expected = sum(fold_probs(fold_model_path(str(out), f), test_examples, vocab_path, bert_config_path)
                   for f in range(FOLDS)) / FOLDS
    assert test_features.shape == (30, 2)
    np.testing.assert_allclose(test_features, expected.numpy(), atol=1e-6)


def test_folds_cover_every_example_once():
    for instances, folds in ((10, 5), (11, 5), (7, 2), (240, 5)):
        bounds = fold_bounds(instances, folds)
        covered = [i for a, b in bounds for i in range(a, b)]
        assert covered == list(range(instances))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
    with pytest.raises(DataError, match="3 training examples cannot be split into --folds_num 5"):
        fold_bounds(3, 5)
    with pytest.raises(ConfigError, match="--folds_num must be at least 2"):
        fold_bounds(10, 1)


def test_fold_model_names_are_the_originals():
    assert fold_model_path("models/classifier_model.bin", 3) == "models/classifier_model-fold_3.bin"
    assert npy_path("f") == "f.npy" and npy_path("f.npy") == "f.npy"


def test_a_missing_fold_model_is_named_and_nothing_is_written(vocab_path, bert_config_path, tmp_path):
    test = write_sentiment_tsv(tmp_path / "test.tsv", 5, 5, with_label=False)
    from tencentpretrain.errors import TencentPretrainError

    with pytest.raises(TencentPretrainError, match="model-fold_0.bin"):
        classifier_cv.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path",
                                  str(test), "--load_model_path", str(tmp_path / "model.bin"),
                                  "--test_features_path", str(tmp_path / "f.npy"), "--labels_num", "2"])
    assert not list(tmp_path.glob("f.npy*"))
