"""Single-process training: a tiny model learns, LoRA on a GQA model, evaluation, logs and plots."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.config import load_model_config, save_model_config
from tencentpretrain.convert.hf import convert_tencentpretrain_to_hf
from tencentpretrain.convert.loading import load_model
from tencentpretrain.errors import ConfigError
from tencentpretrain.models.model import build_model
from tencentpretrain.training.cli import main
from tencentpretrain.training.config import DataOptions
from tencentpretrain.training.data import check_masking_flags
from tests.helpers import REPO_ROOT
from tests.training.conftest import TINY_CONFIG, train_args
from tests.training.test_resume import assert_same_weights

VOCAB = 700


@pytest.mark.slow
def test_tiny_model_learns_the_corpus(tiny_dataset, tmp_path):
    log = str(tmp_path / "train.log")
    result = main(train_args(tiny_dataset, str(tmp_path / "out.bin"), "--batch_size", "8", "--learning_rate", "5e-3",
                             "--warmup", "0.05", "--eval_dataset_path", tiny_dataset, "--eval_steps", "40",
                             "--log_path", log, "--report_steps", "10", steps=80, save=80))
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-10:]) / 10
    assert first > 0.9 * math.log(VOCAB)  # starts near uniform
    assert last < 0.55 * math.log(VOCAB), result.losses[-10:]  # and learns
    (step_a, eval_a), (step_b, eval_b) = result.eval_losses
    assert (step_a, step_b) == (40, 80) and eval_b < eval_a < math.log(VOCAB)
    with open(log, encoding="utf-8") as f:
        text = f.read()
    assert "|       80/      80 steps|" in text and "| eval at step       80| loss" in text

    png = str(tmp_path / "loss.png")
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "plot_loss.py"), "--log_path", log,
                           "--output_path", png], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_lora_on_gqa_trains_saves_only_lora_keys_and_reloads(tiny_dataset, tmp_path):
    torch.manual_seed(3)
    base = str(tmp_path / "base.bin")
    save_checkpoint(build_model(load_model_config(TINY_CONFIG), VOCAB), base)
    out = str(tmp_path / "lora.bin")
    result = main(train_args(tiny_dataset, out, "--pretrained_model_path", base, "--use_lora", "--lora_r", "4",
                             "--lora_target_modules", "linear_layers.0", "linear_layers.1", "linear_layers.2",
                             "--learning_rate", "5e-2", "--batch_size", "8", steps=24, save=24))
    assert sum(result.losses[-4:]) / 4 < sum(result.losses[:4]) / 4 - 0.1, result.losses  # the adapters learn
    state = torch.load(out, weights_only=True)
    assert sorted(state) == sorted(f"encoder.transformer.{i}.self_attn.linear_layers.{j}.lora_{ab}"
                                   for i in range(2) for j in range(3) for ab in "AB")
    assert state["encoder.transformer.0.self_attn.linear_layers.1.lora_B"].shape == (32, 4)  # GQA K: 2 heads x 16
    trained = result.engine.module.eval()
    src = torch.randint(4, VOCAB, (2, 12))
    reloaded = load_model(TINY_CONFIG, base, vocab_size=VOCAB, lora_path=out)
    plain = load_model(TINY_CONFIG, base, vocab_size=VOCAB)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.logits(src), trained.logits(src), rtol=0, atol=0)
        assert not torch.allclose(plain.logits(src), trained.logits(src), atol=1e-3)  # the adapters matter
    assert torch.equal(trained.state_dict()["embedding.word.embedding.weight"],
                       torch.load(base, weights_only=True)["embedding.word.embedding.weight"])  # base frozen


def test_bf16_and_gradient_checkpointing_run(tiny_dataset, tmp_path):
    plain = main(train_args(tiny_dataset, str(tmp_path / "a.bin"), steps=3, save=3))
    ckpt = main(train_args(tiny_dataset, str(tmp_path / "b.bin"), "--gradient_checkpointing", steps=3, save=3))
    assert ckpt.losses == pytest.approx(plain.losses, abs=1e-5)  # recomputation changes nothing
    bf16 = main(train_args(tiny_dataset, str(tmp_path / "c.bin"), "--precision", "bf16", steps=3, save=3))
    assert bf16.losses == pytest.approx(plain.losses, abs=5e-2)
    assert torch.load(str(tmp_path / "c.bin"), weights_only=True)["target.lm.output_layer.weight"].dtype == torch.float32


@pytest.mark.parametrize("mode", ["embeddings", "new_rows"])
def test_train_only_after_vocabulary_extension(tiny_dataset, tmp_path, mode):
    """--train_only: everything outside the vocabulary tables stays bit-identical; with new_rows, the base
    rows too (weight decay included), while the new rows train."""
    original = 600  # pretend the tokenizer's last 100 pieces were added by a vocabulary extension
    base = build_model(load_model_config(TINY_CONFIG), VOCAB)
    base_path = str(tmp_path / "base.bin")
    save_checkpoint(base, base_path)
    out = str(tmp_path / "out.bin")
    log = tmp_path / "logs" / "run.log"  # a directory that does not exist yet is created
    main(train_args(tiny_dataset, out, "--pretrained_model_path", base_path, "--train_only", mode,
                    "--original_vocab_size", str(original), "--weight_decay", "0.1", "--log_path", str(log),
                    steps=4, save=4))
    assert "|        3/       4 steps|" in log.read_text(encoding="utf-8")
    trained = load_model(TINY_CONFIG, out, vocab_size=VOCAB).state_dict()
    tables = ("embedding.word.embedding.weight", "target.lm.output_layer.weight")
    for key, before in base.state_dict().items():
        after = trained[key]
        if key not in tables:
            assert torch.equal(after, before), key
        elif mode == "new_rows":
            assert torch.equal(after[:original], before[:original]), key
            assert not torch.equal(after[original:], before[original:]), key
        else:
            assert not torch.equal(after[:original], before[:original]), key


def test_pretrained_model_path_takes_an_hf_directory(tiny_dataset, tmp_path):
    """Starting from an HF LLaMA directory trains exactly as from the same weights in our format."""
    torch.manual_seed(5)
    config = load_model_config(TINY_CONFIG)
    base = str(tmp_path / "base.bin")
    save_checkpoint(build_model(config, VOCAB), base)
    hf_dir = str(tmp_path / "hf")
    convert_tencentpretrain_to_hf(base, hf_dir, replace(config, vocab_size=VOCAB))
    runs = {}
    for name, start in (("ours", base), ("hf", hf_dir)):
        runs[name] = main(train_args(tiny_dataset, str(tmp_path / name / "out.bin"), "--pretrained_model_path",
                                     start, steps=3, save=3))
    assert runs["hf"].losses == runs["ours"].losses
    assert_same_weights(str(tmp_path / "hf" / "out.bin"), str(tmp_path / "ours" / "out.bin"))

    other = str(tmp_path / "other_config.json")
    save_model_config(replace(config, rope_theta=1e6), other)
    with pytest.raises(ConfigError, match="rope_theta: 1000000.0 in the config, 10000.0 in"):
        main(train_args(tiny_dataset, str(tmp_path / "bad" / "out.bin"), "--pretrained_model_path", hf_dir,
                        "--config_path", other, steps=1, save=1))


def test_the_originals_masking_flags_must_match_the_dataset(tiny_dataset, tmp_path):
    """pretrain.py accepts the original's --whole_word_masking/--span_masking/--dynamic_masking, but masking is
    chosen at preprocessing here: a flag the dataset was not built with is an error, not silently ignored."""
    with pytest.raises(ConfigError, match="--whole_word_masking: .* was not built with it; .*preprocess.py"):
        main(train_args(tiny_dataset, str(tmp_path / "out.bin"), "--whole_word_masking", steps=1, save=1))
    options = {"whole_word_masking": True, "span_masking": {"geo_prob": 0.2, "max_length": 10}}
    check_masking_flags(DataOptions(whole_word_masking=True, span_masking=True), options, "mlm.pt")  # agrees
    with pytest.raises(ConfigError, match="--dynamic_masking"):
        check_masking_flags(DataOptions(dynamic_masking=True), options, "mlm.pt")
    check_masking_flags(DataOptions(span_masking=True, span_geo_prob=0.2, span_max_length=10), options, "mlm.pt")
    with pytest.raises(ConfigError, match="--span_max_length 5: mlm.pt was built with max_length=10"):
        check_masking_flags(DataOptions(span_max_length=5), options, "mlm.pt")
    with pytest.raises(ConfigError, match="--span_geo_prob 0.2: lm.pt was built with no span masking"):
        check_masking_flags(DataOptions(span_geo_prob=0.2), {"span_masking": None}, "lm.pt")
