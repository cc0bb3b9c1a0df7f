"""Flags, configs, schedules and optimizers of pretrain.py (fast, no training)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import ConfigError
from tencentpretrain.models.model import build_model
from tencentpretrain.training.cli import parse_run_config
from tencentpretrain.training.config import OptimConfig, build_parser
from tencentpretrain.training.deepspeed_glue import to_deepspeed_dict
from tencentpretrain.training.optim import build_optimizer, build_scheduler, param_groups
from tencentpretrain.training.parallel import DistEnv, check_world_size
from tests.training.conftest import TINY_CONFIG

# The original pretrain.py flags that must keep working (reference section 4.1).
ORIGINAL_FLAGS = {
    "dataset_path", "pretrained_model_path", "output_model_path", "config_path", "total_steps",
    "save_checkpoint_steps", "report_steps", "accumulation_steps", "batch_size", "instances_buffer_size",
    "labels_num", "dropout", "seed", "spm_model_path", "vocab_path", "tokenizer", "do_lower_case",
    "tensor_model_parallel_size", "pipeline_model_parallel_size", "data_processor", "deep_init", "learning_rate",
    "warmup", "lr_decay", "optimizer", "scheduler", "world_size", "gpu_ranks", "master_ip", "backend", "deepspeed",
    "enable_zero3", "deepspeed_config", "deepspeed_checkpoint_activations", "deepspeed_checkpoint_layers_num",
    "resume_from_checkpoint", "local_rank", "global_rank", "use_lora", "lora_pretrained_model_path", "lora_r",
    "lora_alpha", "lora_dropout", "log_path", "log_level", "log_file_level", "prefix_lm_loss",
    "dynamic_masking", "whole_word_masking", "span_masking", "span_geo_prob", "span_max_length",
    "virtual_pipeline_model_parallel_size", "distribute_checkpointed_activations", "merges_path", "tgt_tokenizer",
    "tgt_vocab_path", "tgt_merges_path", "tgt_spm_model_path", "tgt_do_lower_case",
}
NEW_FLAGS = {
    "precision", "max_grad_norm", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "bias_correction",
    "decay", "gradient_checkpointing", "eval_dataset_path", "eval_steps", "eval_batches", "seq_length",
    "lora_target_modules", "tensorboard_dir", "train_only", "original_vocab_size", "skip_nonfinite_steps",
}


def test_flag_surface_is_frozen():
    parser = build_parser()
    model_flags = {f for f in load_model_config(TINY_CONFIG).to_dict()}
    flags = {a.dest for a in parser._actions if a.dest != "help"} - model_flags
    assert ORIGINAL_FLAGS <= flags | model_flags
    assert flags == (ORIGINAL_FLAGS | NEW_FLAGS) - model_flags  # a new flag must be added here on purpose


def test_precedence_and_equals_syntax():
    run = parse_run_config(["--output_model_path", "x", "--config_path", TINY_CONFIG, "--learning_rate=3e-4",
                            "--layers_num", "3", "--lora_target_modules", "linear_layers.0", "final_linear"])
    assert run.optim.learning_rate == 3e-4 and run.model.layers_num == 3 and run.model.hidden_size == 64
    assert run.lora.lora_config().target_modules == ("linear_layers.0", "final_linear")
    assert run.data.data_processor == "lm"  # from the JSON config


@pytest.mark.parametrize("argv, message", [
    (["--total_steps", "0"], "--total_steps must be at least 1"),
    (["--warmup", "2"], "--warmup is a fraction"),
    (["--tensor_model_parallel_size", "2"], "ZeRO-3"),
])
def test_bad_flags_are_config_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_run_config(["--output_model_path", "x", "--config_path", TINY_CONFIG, *argv])


def test_world_size_must_match_the_launcher(monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    run = parse_run_config(["--output_model_path", "x", "--world_size", "2"])
    with pytest.raises(ConfigError, match="--world_size 2 but this is a single process"):
        check_world_size(run.dist)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="--world_size 2 but the launcher started 4 processes"):
        check_world_size(run.dist)


def test_deepspeed_dict_takes_batch_clipping_and_precision_from_the_run():
    run = parse_run_config(["--output_model_path", "x", "--batch_size", "3", "--accumulation_steps", "2",
                            "--max_grad_norm", "0.5"])
    env = DistEnv(0, 0, 4, torch.device("cpu"), "gloo")
    ds = {"optimizer": {"type": "Adam"}, "zero_optimization": {"stage": 2}, "fp16": {"enabled": True}}
    with pytest.raises(ConfigError, match="fp16, which is not available on CPU"):
        to_deepspeed_dict(run, ds, env)
    bf16 = parse_run_config(["--output_model_path", "x", "--batch_size", "3", "--accumulation_steps", "2",
                             "--max_grad_norm", "0.5", "--precision", "bf16"])
    cfg = to_deepspeed_dict(bf16, ds, env)
    assert cfg["train_batch_size"] == 24 and cfg["gradient_accumulation_steps"] == 2
    assert cfg["gradient_clipping"] == 0.5 and cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]
    assert "optimizer" not in cfg and "optimizer" in ds  # the user's dict is not modified


def lrs(name: str, total: int = 10, warmup: float = 0.2, **kw) -> list[float]:
    cfg = OptimConfig(learning_rate=1.0, scheduler=name, warmup=warmup, **kw)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, cfg, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules():
    assert lrs("linear") == pytest.approx([0, 0.5, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    assert lrs("constant") == [1.0] * 10
    assert lrs("constant_with_warmup")[:3] == [0, 0.5, 1]
    cos = lrs("cosine")
    assert cos[2] == 1 and cos[6] == pytest.approx(0.5) and cos[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert lrs("inverse_sqrt")[8] == pytest.approx(math.sqrt(2 / 8))
    tri = lrs("tri_stage", decay=0.5)
    assert tri[2:5] == [1, 1, 1] and tri[9] == pytest.approx(0.05 ** (4 / 5))
    assert lrs("polynomial")[6] == pytest.approx(0.5, abs=1e-6)


def test_no_decay_groups_and_original_adamw():
    model = build_model(load_model_config(TINY_CONFIG), 50)
    decay, no_decay = param_groups(model, 0.01)
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = build_optimizer(torch.nn.ParameterList([p]), OptimConfig(learning_rate=0.1, bias_correction=False,
                                                                   weight_decay=0.0))
    p.grad = torch.tensor([0.5, 0.5])
    opt.step()
    m, v = 0.1 * 0.5, 0.001 * 0.25  # no bias correction: the first step is only ~ lr * 0.1 / sqrt(0.001)
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, -2.0]) - 0.1 * m / (math.sqrt(v) + 1e-6))


@pytest.mark.parametrize("fused", [True, False])
def test_fast_adamw_without_bias_correction_equals_the_per_parameter_loop(fused, monkeypatch):
    from tencentpretrain.training.optimizers import adamw
    from tencentpretrain.training.optimizers.adamw import AdamWNoBiasCorrection

    if not fused:  # the torch._foreach_* path, taken where the fused kernel cannot be
        monkeypatch.setattr(adamw, "_fusable", lambda params: False)

    torch.manual_seed(0)
    model = build_model(load_model_config(TINY_CONFIG), 50)
    twin = copy.deepcopy(model)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}

    def optimizer(m):
        decay, no_decay = param_groups(m, 0.01)
        return AdamWNoBiasCorrection([decay, no_decay], lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)

    fast, slow = optimizer(model), optimizer(twin)
    if fused:  # the path the test means to cover is the one taken
        grads = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))]
        for p in grads:
            p.grad = torch.ones_like(p)
        assert adamw._fusable(grads)
    names = [n for n, _ in model.named_parameters()]
    for step in range(4):
        for i, (p, q) in enumerate(zip(model.parameters(), twin.parameters())):
            if i % 5 == step % 5:  # some parameters have no gradient in some steps
                p.grad = q.grad = None
                continue
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fast.step()
        slow.reference_step()
    for name, p, q in zip(names, model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=2.4e-7, atol=1e-7, msg=lambda m: f"{name}: {m}")  # 2 float32 ulps
        assert not torch.equal(p, initial[name]), name  # every parameter had gradients in some steps
    for a, b in zip(fast.state_dict()["state"].values(), slow.state_dict()["state"].values()):
        assert a.keys() == b.keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert torch.equal(a["step"], b["step"])
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], rtol=0, atol=1e-9)
