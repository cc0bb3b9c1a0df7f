"""run_classifier_grid: every combination scored and reported, the best one picked and saved; a combination
scores what run_classifier scores with the same settings."""

from __future__ import annotations

import pytest

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import ConfigError
from tencentpretrain.finetune import classifier, classifier_grid
from tencentpretrain.finetune.classifier import Classifier, collate_for, evaluate_classifier, read_classification
from tencentpretrain.finetune.model import load_finetuned_weights
from tencentpretrain.tokenizers import build_tokenizer


def _args(files, vocab_path, config_path, out, *extra):
    return ["--vocab_path", vocab_path, "--config_path", config_path, "--train_path", files["train"],
            "--dev_path", files["dev"], "--output_model_path", str(out), "--report_steps", "1000", *extra]


@pytest.mark.slow
def test_grid_reports_every_combination_and_keeps_the_best(sentiment_files, vocab_path, bert_config_path, tmp_path,
                                                           caplog):
    out = tmp_path / "best.bin"
    caplog.set_level("INFO")
    results = classifier_grid.finetune_main(_args(sentiment_files, vocab_path, bert_config_path, out,
                                                  "--batch_size_list", "16", "32", "--learning_rate_list", "1e-3",
                                                  "1e-6", "--epochs_num_list", "4"))
    messages = [r.getMessage() for r in caplog.records]
    assert [(r.point.batch_size, r.point.learning_rate, r.point.epochs_num) for r in results] == [
        (16, 1e-3, 4), (16, 1e-6, 4), (32, 1e-3, 4), (32, 1e-6, 4)]
    lines = [m for m in messages if m.startswith("On configuration: ")]
    assert lines == [f"On configuration: {r.point.describe()}, Acc.: {r.dev_accuracy:.4f}" for r in results]
    best = max(results, key=lambda r: r.dev_accuracy)
    assert best.point.learning_rate == 1e-3 and best.dev_accuracy >= 0.9
    assert max(r.dev_accuracy for r in results if r.point.learning_rate == 1e-6) < 0.8  # too small to learn
    assert messages[-1] == f"Best Acc. is: {best.dev_accuracy:.4f}, on configuration {best.point.describe()}."
    table = messages[messages.index("batch_size  learning_rate  epochs_num  dev Acc.") + 1:-1]
    assert len(table) == 4 and sum("(best)" in row for row in table) == 1

    # the saved model is the best combination's
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    model = Classifier(load_model_config(bert_config_path), tokenizer.vocab_size, labels_num=2)
    load_finetuned_weights(model, str(out))
    dev = read_classification(sentiment_files["dev"], tokenizer, 128, labels_num=2)
    assert evaluate_classifier(model, dev, 32, collate_for(tokenizer)) == pytest.approx(best.dev_accuracy)

    # a combination scores what run_classifier scores (its last epoch) with the same settings
    caplog.clear()
    classifier.finetune_main(_args({**sentiment_files}, vocab_path, bert_config_path, tmp_path / "single.bin",
                                   "--batch_size", "32", "--learning_rate", "1e-3", "--epochs_num", "4"))
    single = [float(r.getMessage().split()[2]) for r in caplog.records
              if r.getMessage().startswith("Acc. (Correct/Total)")]
    assert single[-1] == pytest.approx(results[2].dev_accuracy, abs=1e-4)


def test_an_empty_or_non_positive_list_is_refused(sentiment_files, vocab_path, bert_config_path, tmp_path):
    with pytest.raises(ConfigError, match=r"--learning_rate_list needs one or more positive values, got \[0.0\]"):
        classifier_grid.finetune_main(_args(sentiment_files, vocab_path, bert_config_path, tmp_path / "m.bin",
                                            "--learning_rate_list", "0"))
    assert not (tmp_path / "m.bin").exists()
