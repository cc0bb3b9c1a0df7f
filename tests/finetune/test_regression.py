"""run_regression / run_regression_infer and the correlations they report."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from tencentpretrain.checkpoint import load_state_dict, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import DataError
from tencentpretrain.finetune import regression
from tencentpretrain.finetune.metrics import average_ranks, pearson, spearman
from tencentpretrain.tokenizers import build_tokenizer
from tests.finetune.conftest import FILLER, NEGATIVE, POSITIVE


def write_regression_tsv(path: Path, n: int, seed: int) -> Path:
    """label = the number of positive characters (0..3) among filler and negative characters."""
    rng = random.Random(seed)
    lines = ["label\ttext_a"]
    for _ in range(n):
        value = rng.randint(0, 3)
        words = [rng.choice(FILLER + NEGATIVE) for _ in range(rng.randint(4, 10))]
        for _ in range(value):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE))
        lines.append(f"{value}.0\t{''.join(words)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def regression_files(tmp_path) -> dict[str, str]:
    return {name: str(write_regression_tsv(tmp_path / f"{name}.tsv", n, seed))
            for name, n, seed in (("train", 300, 21), ("dev", 60, 22), ("test", 80, 23))}


def _train_args(files, vocab_path, config_path, out, *extra):
    return ["--vocab_path", vocab_path, "--config_path", config_path, "--train_path", files["train"],
            "--dev_path", files["dev"], "--test_path", files["test"], "--output_model_path", str(out),
            "--epochs_num", "6", "--batch_size", "16", "--learning_rate", "1e-3", "--report_steps", "5", *extra]


def _reported(caplog, name: str) -> list[float]:
    return [float(r.getMessage().split()[-1]) for r in caplog.records if r.getMessage().startswith(name)]


def test_pearson_and_spearman_on_hand_computed_examples():
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert average_ranks([10, 30, 20, 20]) == [1.0, 4.0, 2.5, 2.5]
    # ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotonic, not linear
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5])) and math.isnan(pearson([1, 1], [2, 3]))
    with pytest.raises(ValueError):
        pearson([1, 2], [1, 2, 3])


def test_correlations_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    x = [rng.randint(0, 5) for _ in range(50)]  # ties
    y = [v + rng.gauss(0, 2) for v in x]
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).correlation, abs=1e-12)


@pytest.mark.slow
def test_learns_a_real_valued_label_and_predicts_what_it_scored(regression_files, vocab_path, bert_config_path,
                                                                tmp_path, caplog):
    out = tmp_path / "regression.bin"
    caplog.set_level("INFO")
    regression.finetune_main(_train_args(regression_files, vocab_path, bert_config_path, out))
    rank_scores, linear_scores = _reported(caplog, "Spearman corr:"), _reported(caplog, "Pearson corr:")
    assert len(rank_scores) == len(linear_scores) == 7  # six dev evaluations, then the test set
    assert rank_scores[-1] >= 0.85 and linear_scores[-1] >= 0.85, (rank_scores, linear_scores)
    state = load_state_dict(str(out))
    assert tuple(state["output_layer_2.weight"].shape) == (1, 32) and "output_layer_1.weight" in state

    rows = Path(regression_files["test"]).read_text(encoding="utf-8").splitlines()
    prediction = tmp_path / "prediction.tsv"
    regression.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path",
                           regression_files["test"], "--load_model_path", str(out), "--prediction_path",
                           str(prediction), "--batch_size", "9"])
    lines = prediction.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label" and len(lines) == len(rows)
    predicted = [float(v) for v in lines[1:]]
    gold = [float(r.split("\t")[0]) for r in rows[1:]]
    assert spearman(gold, predicted) == pytest.approx(rank_scores[-1], abs=1e-4)  # agrees with the test report
    assert pearson(gold, predicted) == pytest.approx(linear_scores[-1], abs=1e-4)


def test_a_label_that_is_not_a_number_names_the_file_and_line(regression_files, vocab_path, bert_config_path,
                                                              tmp_path):
    train = tmp_path / "train_bad.tsv"
    rows = Path(regression_files["train"]).read_text(encoding="utf-8").splitlines()
    rows[5] = "high\t" + rows[5].split("\t", 1)[1]
    train.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "m.bin"
    with pytest.raises(DataError, match=r"train_bad.tsv, line 6: the label 'high' is not a number"):
        regression.finetune_main(_train_args({**regression_files, "train": str(train)}, vocab_path,
                                             bert_config_path, out))
    assert not out.exists()


def test_inference_of_a_missing_text_column_writes_nothing(vocab_path, bert_config_path, tmp_path):
    out = tmp_path / "m.bin"
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    save_checkpoint(regression.Regression(load_model_config(bert_config_path), tokenizer.vocab_size), str(out))
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\n好的\n", encoding="utf-8")
    prediction = tmp_path / "prediction.tsv"
    with pytest.raises(DataError, match=r"bad.tsv, line 1: the header \['sentence'\] lacks the column\(s\) \['text_a'\]"):
        regression.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path",
                               str(bad), "--load_model_path", str(out), "--prediction_path", str(prediction)])
    assert not list(tmp_path.glob("prediction.tsv*"))
