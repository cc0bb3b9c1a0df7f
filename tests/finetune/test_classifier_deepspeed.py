"""run_classifier_deepspeed / run_classifier_mt_deepspeed and their infer scripts, on CPU processes (gloo):
the dev accuracy trajectory of the plain script, a model that run_classifier_infer.py loads and that predicts
the same through every infer script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tencentpretrain.finetune import classifier
from tencentpretrain.training.parallel import free_port
from tests.finetune.test_classifier_mt import make_tasks
from tests.helpers import REPO_ROOT

pytest.importorskip("deepspeed")

CPU_CONFIG = os.path.join(REPO_ROOT, "models", "deepspeed_cpu_config.json")
ZERO2 = ("--deepspeed_config", CPU_CONFIG)
ZERO3 = ("--deepspeed_config", os.path.join(REPO_ROOT, "models", "deepspeed_zero3_cpu_config.json"), "--enable_zero3")


def launch(script: str, args: list[str], processes: int) -> None:
    """Run ``script`` in one process (no launcher), or under `deepspeed --num_gpus N` (N CPU processes here)."""
    path = os.path.join(REPO_ROOT, script)
    if processes == 1:
        cmd = [sys.executable, path, *args]
    else:
        launcher = [sys.executable, "-m", "deepspeed.launcher.runner"]
        cmd = [*launcher, "--num_gpus", str(processes), "--master_port", str(free_port()), path, *args,
               "--world_size", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO_ROOT}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def accuracies(log: Path) -> list[float]:
    return [float(line.split("Acc. (Correct/Total): ")[1].split()[0]) for line in log.read_text().splitlines()
            if "Acc. (Correct/Total): " in line]


def losses(log: Path) -> list[float]:
    return [float(line.rsplit("Avg loss: ", 1)[1]) for line in log.read_text().splitlines() if "Avg loss: " in line]


def common_args(files, vocab_path, config_path, out, log, batch_size: int) -> list[str]:
    return ["--vocab_path", vocab_path, "--config_path", config_path, "--train_path", files["train"],
            "--dev_path", files["dev"], "--output_model_path", str(out), "--log_path", str(log), "--epochs_num", "4",
            "--batch_size", str(batch_size), "--learning_rate", "1e-3", "--report_steps", "3"]


def infer_args(vocab_path, config_path, model, test, prediction) -> list[str]:
    return ["--vocab_path", vocab_path, "--config_path", config_path, "--load_model_path", str(model),
            "--test_path", str(test), "--prediction_path", str(prediction), "--labels_num", "2", "--output_logits",
            "--batch_size", "7"]


def assert_same_predictions(a: Path, b: Path, atol: float) -> None:
    rows_a, rows_b = a.read_text().splitlines(), b.read_text().splitlines()
    assert rows_a[0] == rows_b[0] and len(rows_a) == len(rows_b)
    for x, y in zip(rows_a[1:], rows_b[1:]):
        (label_x, logits_x), (label_y, logits_y) = x.split("\t"), y.split("\t")
        assert label_x == label_y
        assert [float(v) for v in logits_x.split()] == pytest.approx([float(v) for v in logits_y.split()], abs=atol)


def pretrained_checkpoint(vocab_path: str, config_path: str, path: Path) -> list[str]:
    """A pretrained model (with its pretraining heads, target.*) and the flag that loads it."""
    import torch

    from tencentpretrain.checkpoint import save_checkpoint
    from tencentpretrain.config import load_model_config
    from tencentpretrain.models.model import build_model
    from tencentpretrain.tokenizers import build_tokenizer

    torch.manual_seed(3)
    model = build_model(load_model_config(config_path), build_tokenizer("bert", vocab_path=vocab_path).vocab_size)
    save_checkpoint(model, str(path))
    return ["--pretrained_model_path", str(path)]


@pytest.mark.slow
@pytest.mark.parametrize("processes, ds_args, pretrained", [(1, ZERO2, False), (2, ZERO2, False), (2, ZERO3, False),
                                                             (2, ZERO3, True)],
                         ids=["1-zero2", "2-zero2", "2-zero3", "2-zero3-pretrained"])
def test_follows_the_plain_trajectory_and_its_model_predicts_the_same(sentiment_files, vocab_path, bert_config_path,
                                                                      tmp_path, processes, ds_args, pretrained,
                                                                      caplog):
    caplog.set_level("INFO")  # the --log_path copy of the in-process run gets INFO records
    plain_log = tmp_path / "plain.log"
    start = pretrained_checkpoint(vocab_path, bert_config_path, tmp_path / "pre.bin") if pretrained else []
    classifier.finetune_main([*common_args(sentiment_files, vocab_path, bert_config_path, tmp_path / "plain.bin",
                                           plain_log, 16), *start])
    # N processes with --batch_size B take the steps of one process with --batch_size N*B
    ds_out, ds_log = tmp_path / "ds.bin", tmp_path / "ds.log"
    launch("finetune/run_classifier_deepspeed.py",
           [*common_args(sentiment_files, vocab_path, bert_config_path, ds_out, ds_log, 16 // processes),
            *ds_args, *start, "--test_path", sentiment_files["test"]], processes)
    plain, ds = accuracies(plain_log), accuracies(ds_log)
    assert len(ds) == 5 and len(plain) == 4  # 4 dev evaluations (+ the test set for DeepSpeed)
    # within 2 of 60 dev examples once the head has settled; after epoch 1 the differences in reduction order
    # of the processes can still move a few borderline examples
    assert ds[1:4] == pytest.approx(plain[1:], abs=0.034) and ds[0] == pytest.approx(plain[0], abs=0.12), (plain, ds)
    assert max(ds[:4]) >= 0.9
    ds_losses, plain_losses = losses(ds_log), losses(plain_log)
    gaps = [abs(a - b) for a, b in zip(ds_losses, plain_losses)]
    assert len(ds_losses) == len(plain_losses) and max(gaps) < 0.08 and sum(gaps) / len(gaps) < 0.02, gaps

    # the saved model (the best epoch, fp32) loads in run_classifier_infer.py; the DeepSpeed infer script agrees
    nolabel = tmp_path / "nolabel.tsv"
    rows = Path(sentiment_files["test"]).read_text(encoding="utf-8").splitlines()
    nolabel.write_text("\n".join(r.split("\t", 1)[1] for r in rows) + "\n", encoding="utf-8")
    plain_prediction, ds_prediction = tmp_path / "plain_prediction.tsv", tmp_path / "ds_prediction.tsv"
    classifier.infer_main(infer_args(vocab_path, bert_config_path, ds_out, nolabel, plain_prediction))
    launch("inference/run_classifier_deepspeed_infer.py",
           infer_args(vocab_path, bert_config_path, ds_out, nolabel, ds_prediction), processes)
    assert_same_predictions(plain_prediction, ds_prediction, atol=1e-5)
    gold = [int(r.split("\t")[0]) for r in rows[1:]]
    predicted = [int(line.split("\t")[0]) for line in plain_prediction.read_text().splitlines()[1:]]
    assert sum(p == g for p, g in zip(predicted, gold)) / len(gold) == pytest.approx(ds[-1], abs=1e-4)


@pytest.mark.slow
def test_multitask_learns_both_tasks_on_two_processes(vocab_path, bert_config_path, tmp_path):
    from tencentpretrain.finetune import classifier_mt

    tasks = make_tasks(tmp_path)
    out, log = tmp_path / "mt.bin", tmp_path / "mt.log"
    launch("finetune/run_classifier_mt_deepspeed.py",
           ["--vocab_path", vocab_path, "--config_path", bert_config_path, "--dataset_path_list", *tasks,
            "--output_model_path", str(out), "--log_path", str(log), "--epochs_num", "8", "--batch_size", "8",
            "--learning_rate", "1e-3", "--adam_beta1", "0.5", "--deepspeed_config", CPU_CONFIG], 2)
    # ZeRO steps the idle heads with zero gradients, so Adam's momentum keeps moving them; with beta1 0.9 the
    # 3-class head stalls at 0.7 on this data (measured), with 0.5 both tasks are learned
    scores = accuracies(log)
    assert len(scores) == 16 and scores[-2] >= 0.9 and scores[-1] >= 0.9, scores  # epoch 8: task 0, task 1

    test = Path(tasks[1]) / "dev.tsv"
    nolabel = tmp_path / "nolabel.tsv"
    nolabel.write_text("text_a\n" + "\n".join(r.split("\t", 1)[1] for r in test.read_text().splitlines()[1:]) + "\n")
    args = ["--vocab_path", vocab_path, "--config_path", bert_config_path, "--load_model_path", str(out),
            "--test_path", str(nolabel), "--labels_num_list", "2", "3", "--output_prob"]
    classifier_mt.infer_main([*args, "--prediction_path", str(tmp_path / "plain.tsv")])
    launch("inference/run_classifier_mt_deepspeed_infer.py", [*args, "--prediction_path", str(tmp_path / "ds.tsv")],
           2)
    plain, ds = (tmp_path / "plain.tsv").read_text().splitlines(), (tmp_path / "ds.tsv").read_text().splitlines()
    assert plain[0] == ds[0] == "label\tprob" and len(plain) == len(ds) == 61
    for x, y in zip(plain[1:], ds[1:]):
        assert x.split("\t")[0] == y.split("\t")[0]  # "a|b": both tasks' labels
        probs = [[float(v) for v in row.split("\t")[1].replace("|", " ").split()] for row in (x, y)]
        assert probs[0] == pytest.approx(probs[1], abs=1.5e-4)  # 4 decimals


def test_engine_config_takes_the_run_and_refuses_fp16_on_cpu():
    import torch

    from tencentpretrain.errors import ConfigError
    from tencentpretrain.finetune.classifier_deepspeed import engine_config, share_bounds
    from tencentpretrain.training.deepspeed_glue import read_deepspeed_json
    from tencentpretrain.training.parallel import DistEnv

    env = DistEnv(0, 0, 2, torch.device("cpu"), "gloo")
    original = os.path.join(REPO_ROOT, "models", "deepspeed_config.json")  # the original's: fp16, an Adam block
    with pytest.raises(ConfigError, match="deepspeed_config.json enables fp16, which DeepSpeed cannot run on the CPU"):
        engine_config(read_deepspeed_json(original), micro_batch=8, env=env, max_grad_norm=0.0, zero3=False,
                      config_path=original)
    cfg = engine_config(read_deepspeed_json(CPU_CONFIG), micro_batch=8, env=env, max_grad_norm=1.0, zero3=False,
                        config_path=CPU_CONFIG)
    assert (cfg["train_micro_batch_size_per_gpu"], cfg["train_batch_size"], cfg["gradient_clipping"]) == (8, 16, 1.0)
    assert "optimizer" not in cfg and "scheduler" not in cfg
    with pytest.raises(ConfigError, match="--enable_zero3 but .* sets ZeRO stage 2"):
        engine_config(read_deepspeed_json(CPU_CONFIG), micro_batch=8, env=env, max_grad_norm=0.0, zero3=True,
                      config_path=CPU_CONFIG)
    # shares of a step: consecutive, sizes differ by at most one, every example once
    for count, world in ((16, 2), (15, 2), (1, 2), (10, 3)):
        bounds = [share_bounds(count, r, world) for r in range(world)]
        assert [i for a, b in bounds for i in range(a, b)] == list(range(count))


def test_a_world_size_without_a_launcher_is_refused(sentiment_files, vocab_path, bert_config_path, tmp_path):
    from tencentpretrain.errors import ConfigError
    from tencentpretrain.finetune import classifier_deepspeed

    out = tmp_path / "m.bin"
    with pytest.raises(ConfigError, match="--world_size 2 but this is a single process started without a launcher"):
        classifier_deepspeed.finetune_main([*common_args(sentiment_files, vocab_path, bert_config_path, out,
                                                         tmp_path / "log", 8), "--world_size", "2"])
    assert not out.exists()


@pytest.mark.slow
def test_bf16_learns_and_saves_the_fp32_master_weights(sentiment_files, vocab_path, bert_config_path, tmp_path):
    import json

    import torch

    from tencentpretrain.checkpoint import load_state_dict

    config = json.loads(Path(CPU_CONFIG).read_text())
    config["bf16"] = {"enabled": True}
    bf16_config = tmp_path / "bf16.json"
    bf16_config.write_text(json.dumps(config))
    out, log = tmp_path / "bf16.bin", tmp_path / "bf16.log"
    launch("finetune/run_classifier_deepspeed.py",
           [*common_args(sentiment_files, vocab_path, bert_config_path, out, log, 8), "--deepspeed_config",
            str(bf16_config)], 2)
    assert "DeepSpeed precision: bf16" in log.read_text()
    assert max(accuracies(log)) >= 0.9, accuracies(log)
    state = load_state_dict(str(out))
    assert {v.dtype for v in state.values()} == {torch.float32}
    weight = state["output_layer_1.weight"]
    assert (weight != weight.bfloat16().float()).float().mean() > 0.9  # the optimizer's fp32 copy, not bf16 values
