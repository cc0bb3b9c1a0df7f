"""run_classifier_multi_label / run_classifier_multi_label_infer: learning label sets, the original's files, bad
input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tencentpretrain.checkpoint import load_state_dict, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import CheckpointError, DataError
from tencentpretrain.finetune import multi_label
from tencentpretrain.tokenizers import build_tokenizer
from tests.finetune.conftest import FILLER, NEGATIVE, POSITIVE

# label i is present when the text holds a character of GROUPS[i]
GROUPS = (POSITIVE, NEGATIVE, "0123456789")
NEUTRAL = "".join(c for c in FILLER if c not in POSITIVE + NEGATIVE)  # "服" is in both FILLER and POSITIVE


def write_multi_label_tsv(path: Path, n: int, seed: int, *, with_label: bool = True) -> Path:
    rng = random.Random(seed)
    lines = ["label\ttext_a" if with_label else "text_a"]
    for _ in range(n):
        labels = [i for i in range(3) if rng.random() < 0.5] or [rng.randrange(3)]
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(4, 10))]
        for i in labels * 2:  # two characters of each present group
            words.insert(rng.randrange(len(words) + 1), rng.choice(GROUPS[i]))
        text = "".join(words)
        lines.append(f"{','.join(map(str, labels))}\t{text}" if with_label else text)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def multi_label_files(tmp_path) -> dict[str, str]:
    return {name: str(write_multi_label_tsv(tmp_path / f"{name}.tsv", n, seed))
            for name, n, seed in (("train", 300, 11), ("dev", 60, 12), ("test", 80, 13))}


def _train_args(files, vocab_path, config_path, out, *extra):
    return ["--vocab_path", vocab_path, "--config_path", config_path, "--train_path", files["train"],
            "--dev_path", files["dev"], "--test_path", files["test"], "--output_model_path", str(out),
            "--epochs_num", "6", "--batch_size", "16", "--learning_rate", "1e-3", "--report_steps", "5",
            "--pooling", "max", *extra]  # presence of a character: max pooling learns it in a few epochs


def _accuracies(caplog) -> list[tuple[float, int, int]]:
    found = []
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith("Acc. (Correct/Total):"):
            accuracy, counts = message.split()[2:4]
            correct, total = counts.strip("()").split("/")
            found.append((float(accuracy), int(correct), int(total)))
    return found


@pytest.mark.slow
def test_learns_label_sets_and_predicts_what_it_scored(multi_label_files, vocab_path, bert_config_path, tmp_path,
                                                       caplog):
    out = tmp_path / "multi_label.bin"
    caplog.set_level("INFO")
    multi_label.finetune_main(_train_args(multi_label_files, vocab_path, bert_config_path, out))
    scores = _accuracies(caplog)
    assert len(scores) == 7  # six dev evaluations, then the test set with the best model
    test_accuracy, test_correct, test_total = scores[-1]
    assert test_total == 80 and test_accuracy >= 0.95, scores  # every one of the 3 labels right
    keys = list(load_state_dict(str(out)))
    assert keys[-4:] == ["output_layer_1.weight", "output_layer_1.bias", "output_layer_2.weight",
                         "output_layer_2.bias"]
    assert tuple(load_state_dict(str(out))["output_layer_2.weight"].shape) == (3, 32)  # 3 labels counted

    rows = Path(multi_label_files["test"]).read_text(encoding="utf-8").splitlines()
    nolabel = tmp_path / "nolabel.tsv"
    nolabel.write_text("\n".join(r.split("\t", 1)[1] for r in rows) + "\n", encoding="utf-8")
    prediction = tmp_path / "prediction.tsv"
    multi_label.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path",
                            str(nolabel), "--load_model_path", str(out), "--prediction_path", str(prediction),
                            "--labels_num", "3", "--pooling", "max", "--output_logits", "--output_prob", "--batch_size", "7"])
    lines = prediction.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\tlogits\tprob" and len(lines) == len(rows)
    gold = [set(r.split("\t")[0].split(",")) for r in rows[1:]]
    predicted = [set(filter(None, line.split("\t")[0].split(","))) for line in lines[1:]]
    assert sum(p == g for p, g in zip(predicted, gold)) == test_correct  # the infer script agrees with the report
    for line, labels in zip(lines[1:], predicted):
        _, logits, prob = line.split("\t")
        logits, prob = [float(v) for v in logits.split()], [float(v) for v in prob.split()]
        assert labels == {str(i) for i in range(3) if prob[i] > 0.5}
        assert all((v > 0) == (p > 0.5) for v, p in zip(logits, prob))


@pytest.mark.parametrize("label, message", [
    ("0,x", r"train_bad.tsv, line 3: the label '0,x' is not a comma-separated list of integer class ids"),
    ("1,3", r"train_bad.tsv, line 3: the class id 3 is outside 0..2 \(labels_num = 3\)"),
])
def test_a_bad_label_names_the_file_and_line(multi_label_files, vocab_path, bert_config_path, tmp_path, label,
                                             message):
    train = tmp_path / "train_bad.tsv"
    rows = Path(multi_label_files["train"]).read_text(encoding="utf-8").splitlines()
    rows[2] = label + "\t" + rows[2].split("\t", 1)[1]
    train.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "m.bin"
    with pytest.raises(DataError, match=message):
        multi_label.finetune_main(_train_args({**multi_label_files, "train": str(train)}, vocab_path,
                                              bert_config_path, out, "--labels_num", "3"))
    assert not out.exists()


def test_inference_with_another_labels_num_is_refused_and_writes_nothing(multi_label_files, vocab_path,
                                                                         bert_config_path, tmp_path):
    out = tmp_path / "m.bin"
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    model = multi_label.MultilabelClassifier(load_model_config(bert_config_path), tokenizer.vocab_size, labels_num=3)
    save_checkpoint(model, str(out))
    prediction = tmp_path / "prediction.tsv"
    with pytest.raises(CheckpointError, match="output_layer_2"):
        multi_label.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path",
                                multi_label_files["test"], "--load_model_path", str(out), "--prediction_path",
                                str(prediction), "--labels_num", "4"])
    assert not list(tmp_path.glob("prediction.tsv*"))
