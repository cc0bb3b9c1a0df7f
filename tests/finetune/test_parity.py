"""Agreement with the original TencentPretrain's fine-tuning: its learning-rate schedule, and (with files it
wrote, committed under tests/assets/original_finetune/) its fine-tuned classifier and predictions."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import CheckpointError
from tencentpretrain.finetune import classifier
from tencentpretrain.finetune.classifier import Classifier, collate_for, read_classification
from tencentpretrain.finetune.loop import finetune_scheduler, fit
from tencentpretrain.finetune.model import build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import FinetuneOptimConfig, FinetuneOptions
from tencentpretrain.tokenizers import build_tokenizer
from tests.finetune.conftest import write_sentiment_tsv


def _original_linear_factor(step: int, total: int, warmup: float) -> float:
    """The original's get_linear_schedule_with_warmup with num_warmup_steps = train_steps * warmup (a float)."""
    warmup_steps = total * warmup
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total - step) / max(1, total - warmup_steps))


@pytest.mark.parametrize("total", [5, 188])
def test_the_schedule_is_the_originals_with_its_fractional_warmup(total):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-5)
    scheduler = finetune_scheduler(optimizer, FinetuneOptimConfig(learning_rate=2e-5), total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [2e-5 * _original_linear_factor(step, total, 0.1) for step in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if total == 5:
        assert lrs[0] == 0.0 and lrs[1] == pytest.approx(2e-5 * 4 / 4.5)  # warm-up over 0.5 steps, not 0


def test_every_epoch_sees_the_originals_batches(vocab_path, bert_config_path, tmp_path):
    """The original shuffled its training list in place with Python's random (seeded by --seed) before every
    epoch, so epoch 2 is a shuffle of epoch 1's order; with the same seed the same batches come in the same order."""
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    examples = read_classification(str(write_sentiment_tsv(tmp_path / "t.tsv", 20, 1)), tokenizer, 32, labels_num=2)
    for number, example in enumerate(examples):
        example["line"] = number
    model = build_task_model(Classifier, load_model_config(bert_config_path), tokenizer.vocab_size, None,
                             labels_num=2)
    seen: list[list[int]] = []
    pad = collate_for(tokenizer)

    def collate(chunk):
        seen.append([e["line"] for e in chunk])
        return pad(chunk)

    options = FinetuneOptions(train_path="t.tsv", dev_path="t.tsv", output_model_path=str(tmp_path / "m.bin"),
                              batch_size=8, epochs_num=3, seed=7, report_steps=100)
    fit(model, examples, lambda: examples, None, collate=collate, evaluate=lambda m, ex: 0.0, options=options,
        optim=FinetuneOptimConfig(), device=torch.device("cpu"))

    random.seed(7)  # the original: set_seed(args.seed), then random.shuffle(trainset) at the start of each epoch
    trainset, expected = list(range(20)), []
    for _ in range(3):
        random.shuffle(trainset)
        expected += [trainset[i:i + 8] for i in range(0, 20, 8)]
    assert seen == expected


# ---------------------------------------------------------------------- checkpoints written by the original
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "original_finetune"  # made by make_original_finetune.py


def _read_predictions(path: Path) -> tuple[list[str], list[int], torch.Tensor, torch.Tensor]:
    """header, labels, logits (N, L) and probabilities (N, L) of a ``label logits prob`` prediction TSV."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    labels = [int(r[0]) for r in rows]
    logits = torch.tensor([[float(v) for v in r[1].split(" ")] for r in rows], dtype=torch.float64)
    probs = torch.tensor([[float(v) for v in r[2].split(" ")] for r in rows], dtype=torch.float64)
    return lines[0].split("\t"), labels, logits, probs


def _our_predictions(model: str, tmp_path: Path) -> Path:
    out = tmp_path / f"{model}.tsv"
    classifier.infer_main([
        "--vocab_path", str(ASSETS / "vocab.txt"), "--config_path", str(ASSETS / "config.json"),
        "--load_model_path", str(ASSETS / model), "--test_path", str(ASSETS / "test_nolabel.tsv"),
        "--prediction_path", str(out), "--labels_num", "2", "--seq_length", "64", "--batch_size", "5",
        "--output_logits", "--output_prob"])
    return out


@pytest.mark.parametrize("model, theirs", [
    ("original_classifier.bin", "original_prediction.tsv"),  # fine-tuned and predicted by the original
    ("ours_classifier.bin", "original_prediction_of_ours.tsv"),  # fine-tuned here, predicted by the original
])
def test_our_infer_writes_what_the_originals_infer_wrote(model, theirs, tmp_path):
    header, labels, logits, probs = _read_predictions(_our_predictions(model, tmp_path))
    their_header, their_labels, their_logits, their_probs = _read_predictions(ASSETS / theirs)
    assert header == their_header == ["label", "logits", "prob"]
    assert labels == their_labels
    assert len(set(labels)) == 2  # the model discriminates: a constant prediction would prove little
    torch.testing.assert_close(logits, their_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(probs, their_probs, atol=1e-5, rtol=0)


def test_the_original_and_we_fine_tuned_the_same_model():
    """Both programs fine-tuned from the same initial weights with the same flags and data (no dropout): the
    same batches, schedule and optimizer give the same model, up to rounding (as the original's infer saw them)."""
    _, labels, logits, _ = _read_predictions(ASSETS / "original_prediction.tsv")
    _, our_labels, our_logits, _ = _read_predictions(ASSETS / "original_prediction_of_ours.tsv")
    assert labels == our_labels
    torch.testing.assert_close(our_logits, logits, atol=1e-4, rtol=0)
    assert logits.abs().max() > 0.1  # they moved away from the initialisation's near-zero logits


def test_the_originals_fine_tuned_file_loads_strictly_as_tensors_only():
    state = load_state_dict(str(ASSETS / "original_classifier.bin"))  # the restricted (weights-only) unpickler
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model = Classifier(load_model_config(str(ASSETS / "config.json")), _vocab_size(), labels_num=2)
    assert set(state) == set(model.state_dict())  # the same keys (the original lists embedding.layer_norm first)
    load_finetuned_weights(model, str(ASSETS / "original_classifier.bin"))  # strict: raises on any difference
    torch.testing.assert_close(model.output_layer_2.weight, state["output_layer_2.weight"])


def test_a_pickled_object_in_a_fine_tuned_file_is_refused(tmp_path):
    state = load_state_dict(str(ASSETS / "original_classifier.bin"))
    evil = tmp_path / "evil.bin"
    torch.save({**state, "extra": Path("/")}, evil)  # an arbitrary object beside the tensors
    model = Classifier(load_model_config(str(ASSETS / "config.json")), _vocab_size(), labels_num=2)
    with pytest.raises(CheckpointError):
        load_finetuned_weights(model, str(evil))


def _vocab_size() -> int:
    return len((ASSETS / "vocab.txt").read_text(encoding="utf-8").splitlines())
