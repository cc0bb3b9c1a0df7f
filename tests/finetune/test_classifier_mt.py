"""run_classifier_mt / run_classifier_mt_infer: one encoder learns two tasks, the original's head keys and
prediction format."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.errors import ConfigError
from tencentpretrain.finetune import classifier_mt
from tencentpretrain.finetune.classifier_mt import one_task_batches
from tests.finetune.conftest import FILLER, write_sentiment_tsv

GROUPS = ("，", "！", "？")  # task "marks": the class is the punctuation mark the text holds (twice)


def write_marks_tsv(path: Path, n: int, seed: int, *, with_label: bool = True) -> Path:
    """A 3-class TSV: filler text with two characters of group ``label``."""
    rng = random.Random(seed)
    lines = ["label\ttext_a" if with_label else "text_a"]
    for _ in range(n):
        label = rng.randrange(3)
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 10))]
        for _ in range(2):
            words.insert(rng.randrange(len(words) + 1), rng.choice(GROUPS[label]))
        lines.append((f"{label}\t" if with_label else "") + "".join(words))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_tasks(root: Path) -> list[str]:
    sentiment, marks = root / "sentiment", root / "marks"
    for d in (sentiment, marks):
        d.mkdir()
    write_sentiment_tsv(sentiment / "train.tsv", 200, 1)
    write_sentiment_tsv(sentiment / "dev.tsv", 60, 2)
    write_marks_tsv(marks / "train.tsv", 240, 3)
    write_marks_tsv(marks / "dev.tsv", 60, 4)
    return [str(sentiment), str(marks)]


def task_accuracies(caplog) -> dict[int, list[float]]:
    """Each task's dev accuracy per epoch, from the 'Dataset id' line and the report after it."""
    scores: dict[int, list[float]] = {}
    task = None
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith("Dataset id: "):
            task = int(message.split()[2])
        elif message.startswith("Acc. (Correct/Total)") and task is not None:
            scores.setdefault(task, []).append(float(message.split()[2]))
    return scores


@pytest.mark.slow
def test_learns_two_tasks_and_infer_predicts_both(vocab_path, bert_config_path, tmp_path, caplog):
    tasks = make_tasks(tmp_path)
    out = tmp_path / "mt.bin"
    caplog.set_level("INFO")
    classifier_mt.finetune_main(["--vocab_path", vocab_path, "--config_path", bert_config_path,
                                 "--dataset_path_list", *tasks, "--output_model_path", str(out), "--epochs_num", "6",
                                 "--batch_size", "16", "--learning_rate", "1e-3", "--report_steps", "10"])
    scores = task_accuracies(caplog)
    assert sorted(scores) == [0, 1] and all(len(v) == 6 for v in scores.values())
    assert scores[0][-1] >= 0.9 and scores[1][-1] >= 0.9, scores
    state = load_state_dict(str(out))
    assert state["output_layers_1.1.weight"].shape == (32, 32)
    assert state["output_layers_2.0.weight"].shape == (2, 32) and state["output_layers_2.1.weight"].shape == (3, 32)
    assert not any(k.startswith(("output_layer_1", "target.")) for k in state)

    # the saved model is the last epoch's: the infer script reproduces the last reported dev accuracies
    for task, dev in enumerate(tasks):
        rows = (Path(dev) / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
        nolabel = tmp_path / f"nolabel{task}.tsv"
        nolabel.write_text("text_a\n" + "\n".join(r.split("\t", 1)[1] for r in rows) + "\n", encoding="utf-8")
        prediction = tmp_path / f"prediction{task}.tsv"
        classifier_mt.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path",
                                  str(nolabel), "--load_model_path", str(out), "--prediction_path", str(prediction),
                                  "--labels_num_list", "2", "3", "--output_logits", "--output_prob",
                                  "--batch_size", "7"])
        lines = prediction.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "label\tlogits\tprob" and len(lines) == len(rows) + 1
        gold = [int(r.split("\t")[0]) for r in rows]
        correct = 0
        for line, g in zip(lines[1:], gold):
            labels, logits, prob = line.split("\t")
            labels = [int(v) for v in labels.split("|")]
            logits = [[float(v) for v in part.split(" ")] for part in logits.split("|")]
            prob = [[float(v) for v in part.split(" ")] for part in prob.split("|")]
            assert [len(v) for v in logits] == [2, 3] and [len(v) for v in prob] == [2, 3]
            assert labels == [max(range(len(v)), key=v.__getitem__) for v in prob]
            assert all(sum(v) == pytest.approx(1.0, abs=5e-4) for v in prob)  # 4 decimals, as the original
            correct += labels[task] == g
        assert correct / len(gold) == pytest.approx(scores[task][-1], abs=1e-4)


def test_each_batch_holds_one_task_and_every_example_once_per_epoch():
    train = [{"task": t, "i": i} for t, n in ((0, 37), (1, 20), (2, 5)) for i in range(n)]
    rng = random.Random(0)
    epochs = [list(one_task_batches(train, 8, rng)) for _ in range(2)]
    for packed in epochs:
        assert all(len({e["task"] for e in batch}) == 1 for batch in packed)
        assert sorted((e["task"], e["i"]) for b in packed for e in b) == sorted((e["task"], e["i"]) for e in train)
        assert len(packed) == 5 + 3 + 1
    assert [b[0]["task"] for b in epochs[0]] != sorted(b[0]["task"] for b in epochs[0])  # tasks interleaved
    assert epochs[0] != epochs[1]


def test_a_batch_mixing_tasks_is_refused(vocab_path, bert_config_path):
    from tencentpretrain.config import load_model_config

    model = classifier_mt.MultitaskClassifier(load_model_config(bert_config_path), 60, labels_num_list=[2, 3])
    batch = {"src": torch.ones(2, 4, dtype=torch.long), "seg": torch.ones(2, 4, dtype=torch.long),
             "task": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match=r"mixes tasks \[0, 1\]"):
        model(batch)


def test_a_task_directory_without_dev_tsv_is_named(vocab_path, bert_config_path, tmp_path):
    tasks = make_tasks(tmp_path)
    (Path(tasks[1]) / "dev.tsv").unlink()
    with pytest.raises(ConfigError, match=r"marks: no .*marks/dev.tsv"):
        classifier_mt.finetune_main(["--vocab_path", vocab_path, "--config_path", bert_config_path,
                                     "--dataset_path_list", *tasks, "--output_model_path", str(tmp_path / "m.bin")])
    assert not (tmp_path / "m.bin").exists()


def test_infer_refuses_a_labels_num_list_the_model_was_not_trained_with(vocab_path, bert_config_path, tmp_path):
    from tencentpretrain.checkpoint import save_checkpoint
    from tencentpretrain.config import load_model_config
    from tencentpretrain.errors import CheckpointError
    from tencentpretrain.tokenizers import build_tokenizer

    vocab_size = build_tokenizer("bert", vocab_path=vocab_path).vocab_size
    model = classifier_mt.MultitaskClassifier(load_model_config(bert_config_path), vocab_size, labels_num_list=[2, 3])
    save_checkpoint(model, str(tmp_path / "mt.bin"))
    test = write_sentiment_tsv(tmp_path / "test.tsv", 5, 1, with_label=False)
    prediction = tmp_path / "prediction.tsv"
    args = ["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path", str(test),
            "--load_model_path", str(tmp_path / "mt.bin"), "--prediction_path", str(prediction)]
    with pytest.raises(CheckpointError, match="output_layers_2.1"):
        classifier_mt.infer_main([*args, "--labels_num_list", "2", "2"])
    with pytest.raises(CheckpointError, match="output_layers_1.2"):
        classifier_mt.infer_main([*args, "--labels_num_list", "2", "3", "2"])
    assert not list(tmp_path.glob("prediction.tsv*"))
    classifier_mt.infer_main([*args, "--labels_num_list", "2", "3"])
    assert len(prediction.read_text(encoding="utf-8").splitlines()) == 6
