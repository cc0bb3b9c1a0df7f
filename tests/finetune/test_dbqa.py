"""run_dbqa: MRR/MAP by hand, grouping by question, learning to rank the answer first, bad input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tencentpretrain.errors import DataError
from tencentpretrain.finetune import classifier, dbqa
from tencentpretrain.finetune.dbqa import average_precision, group_by_question, mrr_and_map, reciprocal_rank
from tests.finetune.conftest import FILLER, sentiment_sentence

# (scores, labels) of four questions, with their reciprocal rank and average precision worked out by hand
QUESTIONS = [
    ([0.1, 0.9, 0.5], [0, 0, 1], 1 / 2, 1 / 2),  # the answer is second
    ([0.8, 0.2, 0.7, 0.1], [1, 0, 1, 0], 1.0, (1 / 1 + 2 / 2) / 2),  # two answers, first and second
    ([0.9, 0.4, 0.6, 0.2], [0, 1, 0, 1], 1 / 3, (1 / 3 + 2 / 4) / 2),  # two answers, third and fourth
    ([0.3, 0.2, 0.1], [0, 0, 0], 1 / 4, 0.0),  # no answer: 1 / (candidates + 1), as the original counted
]


def test_reciprocal_rank_and_average_precision_by_hand():
    for scores, labels, rr, ap in QUESTIONS:
        assert reciprocal_rank(scores, labels) == pytest.approx(rr)
        assert average_precision(scores, labels) == pytest.approx(ap)
    mrr, mean_ap = mrr_and_map([(s, labels) for s, labels, _, _ in QUESTIONS])
    assert mrr == pytest.approx((1 / 2 + 1 + 1 / 3 + 1 / 4) / 4)  # 0.5208
    assert mean_ap == pytest.approx((1 / 2 + 1 + 5 / 12 + 0) / 4)  # 0.4792


def test_questions_are_runs_of_the_same_qid():
    groups = group_by_question([7, 7, 3, 3, 3, 7], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 0, 0, 1, 0, 1])
    assert groups == [([0.1, 0.2], [1, 0]), ([0.3, 0.4, 0.5], [0, 1, 0]), ([0.6], [1])]


def write_dbqa_tsv(path: Path, questions: int, seed: int) -> Path:
    """Each question has 4 candidates; the answers (1 or 2) are the positive sentences."""
    rng = random.Random(seed)
    lines = ["qid\tlabel\ttext_a\ttext_b"]
    for qid in range(questions):
        question = "".join(rng.choice(FILLER) for _ in range(rng.randint(3, 6)))
        answers = set(rng.sample(range(4), rng.choice((1, 1, 2))))
        for i in range(4):
            label = int(i in answers)
            lines.append(f"{qid}\t{label}\t{question}\t{sentiment_sentence(rng, label)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def dbqa_files(tmp_path) -> dict[str, str]:
    return {name: str(write_dbqa_tsv(tmp_path / f"{name}.tsv", n, seed))
            for name, n, seed in (("train", 60, 41), ("dev", 15, 42), ("test", 20, 43))}


def _train_args(files, vocab_path, config_path, out, *extra):
    return ["--vocab_path", vocab_path, "--config_path", config_path, "--train_path", files["train"],
            "--dev_path", files["dev"], "--test_path", files["test"], "--output_model_path", str(out),
            "--epochs_num", "5", "--batch_size", "16", "--learning_rate", "1e-3", "--report_steps", "5", *extra]


def _reported(caplog, name: str) -> list[float]:
    return [float(r.getMessage().split()[-1]) for r in caplog.records if r.getMessage().startswith(name)]


@pytest.mark.slow
def test_learns_to_rank_the_answers_first_and_the_classifier_infer_agrees(dbqa_files, vocab_path, bert_config_path,
                                                                          tmp_path, caplog):
    out = tmp_path / "dbqa.bin"
    caplog.set_level("INFO")
    dbqa.finetune_main(_train_args(dbqa_files, vocab_path, bert_config_path, out))
    mrr, mean_ap = _reported(caplog, "Mean Reciprocal Rank:"), _reported(caplog, "Mean Average Precision:")
    assert len(mrr) == len(mean_ap) == 6  # five dev evaluations, then the test set
    assert mrr[-1] >= 0.9 and mean_ap[-1] >= 0.9, (mrr, mean_ap)  # chance is about 0.5

    prediction = tmp_path / "prediction.tsv"
    classifier.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path",
                           dbqa_files["test"], "--load_model_path", str(out), "--prediction_path", str(prediction),
                           "--labels_num", "2", "--output_logits"])
    rows = [r.split("\t") for r in Path(dbqa_files["test"]).read_text(encoding="utf-8").splitlines()[1:]]
    logits = [[float(v) for v in line.split("\t")[1].split()] for line in
              prediction.read_text(encoding="utf-8").splitlines()[1:]]
    questions = group_by_question([int(r[0]) for r in rows], [v[1] for v in logits], [int(r[1]) for r in rows])
    assert mrr_and_map(questions) == pytest.approx((mrr[-1], mean_ap[-1]), abs=1e-4)


def test_a_bad_qid_names_the_file_and_line(dbqa_files, vocab_path, bert_config_path, tmp_path):
    train = tmp_path / "train_bad.tsv"
    rows = Path(dbqa_files["train"]).read_text(encoding="utf-8").splitlines()
    rows[4] = "q4\t" + rows[4].split("\t", 1)[1]
    train.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "m.bin"
    with pytest.raises(DataError, match=r"train_bad.tsv, line 5: the qid 'q4' is not an integer question id"):
        dbqa.finetune_main(_train_args({**dbqa_files, "train": str(train)}, vocab_path, bert_config_path, out))
    headless = tmp_path / "noqid.tsv"
    headless.write_text("label\ttext_a\ttext_b\n1\t好\t好\n0\t好\t差\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"noqid.tsv, line 1: the header .* lacks the column\(s\) \['qid'\]"):
        dbqa.finetune_main(_train_args({**dbqa_files, "train": str(headless)}, vocab_path, bert_config_path, out))
    assert not out.exists()
