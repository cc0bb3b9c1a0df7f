"""The training loop and the assembly of a run (``train(run)``), shared by every process mode.

``step`` counts optimizer steps and ``micro_step`` micro-batches; the schedule spans ``--total_steps`` optimizer
steps. The loop syncs with the host only on report, evaluation and checkpoint steps.
"""

from __future__ import annotations

import itertools
import logging
import random
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tencentpretrain.errors import ConfigError
from tencentpretrain.evaluation.perplexity import evaluate_dataset_loss
from tencentpretrain.training import checkpointing as ckpt
from tencentpretrain.training.config import RunConfig
from tencentpretrain.training.data import build_loader, dataset_manifest
from tencentpretrain.training.engine import AUTOCAST_DTYPES, DeepSpeedEngine, LocalEngine, TrainEngine
from tencentpretrain.training.model_setup import Vocabulary, build_run_model, resolve_vocabulary
from tencentpretrain.training.optim import build_optimizer, build_scheduler
from tencentpretrain.training.parallel import (
    DistEnv,
    all_reduce_sum,
    barrier,
    init_distributed,
    wrap_ddp,
)
from tencentpretrain.training.reporting import Report, Reporter, setup_logging
from tencentpretrain.transforms.activation_checkpointing import enable_activation_checkpointing
from tencentpretrain.vocab.freeze import (
    VocabExtensionFreeze,
    freeze_for_vocab_extension,
    resolve_original_vocab_size,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run hands back (the engine stays usable, e.g. for a final evaluation)."""

    final_model_path: str
    counters: ckpt.Counters
    losses: list[float]  # this rank's mean micro-batch loss of every optimizer step run in this process
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    engine: Any = None


@dataclass
class Window:
    """Device-side sums of one report window."""

    loss: torch.Tensor
    grad_norm: torch.Tensor
    micro_steps: int = 0
    steps: int = 0
    tokens: int = 0  # non-padding tokens on this rank


# ---------------------------------------------------------------------- assembly
def build_engine(run: RunConfig, env: DistEnv, vocab: Vocabulary) -> TrainEngine:
    """The model, optimizer and schedule of the run behind the engine interface of its process mode."""
    if run.deepspeed.deepspeed:
        return _build_deepspeed_engine(run, env, vocab)
    model = build_run_model(run, vocab.size, env, None)
    freeze = _freeze_for_vocabulary(run, model)  # before DDP, which reads the requires_grad flags
    if run.train.gradient_checkpointing or run.deepspeed.deepspeed_checkpoint_activations:
        enable_activation_checkpointing(model)
    model = wrap_ddp(model.to(env.device), env)
    optimizer = build_optimizer(model, run.optim)
    if freeze is not None:
        freeze.attach_optimizer(optimizer)
    scheduler = build_scheduler(optimizer, run.optim, run.train.total_steps)
    return LocalEngine(model, optimizer, scheduler, env=env, precision=run.train.precision or "fp32",
                       max_grad_norm=run.optim.max_grad_norm, accumulation_steps=run.train.accumulation_steps)


def _build_deepspeed_engine(run: RunConfig, env: DistEnv, vocab: Vocabulary) -> DeepSpeedEngine:
    from tencentpretrain.training import deepspeed_glue as glue

    deepspeed = glue.import_deepspeed()
    cfg = glue.to_deepspeed_dict(run, glue.read_deepspeed_json(run.deepspeed.deepspeed_config), env)
    model = build_run_model(run, vocab.size, env, cfg)
    if run.train.train_only == "new_rows":
        # DeepSpeed keeps the fp32 master weights in its optimizer, where the old rows cannot be written back.
        raise ConfigError("--train_only new_rows is not supported under DeepSpeed; use --train_only embeddings")
    _freeze_for_vocabulary(run, model)
    if run.train.gradient_checkpointing or run.deepspeed.deepspeed_checkpoint_activations:
        enable_activation_checkpointing(model)
    optimizer = _deepspeed_client_optimizer(run, model, cfg)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=cfg, dist_init_required=False,
        lr_scheduler=lambda opt: build_scheduler(opt, run.optim, run.train.total_steps),
    )
    return DeepSpeedEngine(engine, env=env, precision=glue.deepspeed_precision(cfg))


def _freeze_for_vocabulary(run: RunConfig, model: torch.nn.Module) -> VocabExtensionFreeze | None:
    """Apply ``--train_only`` (training after a vocabulary extension), if asked."""
    if run.train.train_only is None:
        return None
    original = resolve_original_vocab_size(run.train.original_vocab_size, run.train.pretrained_model_path)
    return freeze_for_vocab_extension(model, run.train.train_only, original)


def _deepspeed_client_optimizer(run: RunConfig, model: torch.nn.Module, cfg: dict[str, Any]) -> Any:
    """The run's optimizer; with optimizer offload and AdamW, DeepSpeed's CPU Adam (JIT-built on first use)."""
    from tencentpretrain.training import deepspeed_glue as glue
    from tencentpretrain.training.optim import param_groups

    o = run.optim
    if glue.offloads_optimizer(cfg) and o.optimizer == "adamw":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(param_groups(model, o.weight_decay), lr=o.learning_rate,
                                betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_epsilon,
                                bias_correction=o.bias_correction, adamw_mode=True)
    return build_optimizer(model, run.optim)


def fingerprint(run: RunConfig, vocab: Vocabulary, engine: TrainEngine) -> dict[str, Any]:
    """What a checkpoint must match to be resumed by this run."""
    return {
        "model_config": run.model.to_dict(),
        "vocab_size": vocab.size,
        "tokenizer_files": list(vocab.tokenizer_files),
        "use_lora": run.lora.use_lora,
        "lora": [run.lora.lora_r, list(run.lora.lora_target_modules)] if run.lora.use_lora else None,
        "engine": "deepspeed" if isinstance(engine, DeepSpeedEngine) else "local",
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------- the run
def train(run: RunConfig) -> TrainResult:
    """Train as ``run`` says, in whatever process mode the environment sets up; returns on every rank."""
    env = init_distributed(run.dist, use_deepspeed=run.deepspeed.deepspeed)
    setup_logging(run.log, rank=env.rank)
    _log_mode(env, run)
    vocab = resolve_vocabulary(run, dataset_manifest(run.data.dataset_path))
    engine = build_engine(run, env, vocab)
    seed_everything(run.train.seed + env.rank)  # dropout differs per rank; data order comes from the loader
    loader = build_loader(run, env, run.data.dataset_path)
    print_ = fingerprint(run, vocab, engine)
    resume = ckpt.resolve_resume(run.train.resume_from_checkpoint, run.train.output_model_path)
    counters = ckpt.load_training_checkpoint(engine, loader, print_, resume) if resume else ckpt.Counters()
    loop = Loop(run, engine, loader, print_)
    result = loop.execute(counters)
    _save_final(run, engine, result)
    return result


def _log_mode(env: DistEnv, run: RunConfig) -> None:
    if run.deepspeed.deepspeed:
        logger.info("Using DeepSpeed (%d processes, backend %s) for training.", env.world_size, env.backend)
    elif env.world_size > 1:
        logger.info("Using distributed mode for training (%d processes, backend %s).", env.world_size, env.backend)
    else:
        logger.info("Using %s mode for training.", "GPU" if env.device.type == "cuda" else "CPU")


def _save_final(run: RunConfig, engine: TrainEngine, result: TrainResult) -> None:
    """Copy the last checkpoint's weights to ``--output_model_path`` (atomically)."""
    last = ckpt.checkpoint_path(run.train.output_model_path, result.counters.step)
    if engine.env.is_main:
        from tencentpretrain.checkpoint import atomic_path

        with atomic_path(run.train.output_model_path) as tmp:
            shutil.copyfile(last, tmp)
        logger.info("saved the final model to %s", run.train.output_model_path)
    barrier(engine.env)


class Loop:
    """The optimisation loop: micro-batches, optimizer steps, reports, evaluations and checkpoints."""

    def __init__(self, run: RunConfig, engine: TrainEngine, loader: Any, print_: dict[str, Any]) -> None:
        self.run, self.engine, self.loader, self.fingerprint = run, engine, loader, print_
        self.env = engine.env
        self.cfg = run.train
        self.device = self.env.device

    def execute(self, counters: ckpt.Counters) -> TrainResult:
        cfg = self.cfg
        result = TrainResult(cfg.output_model_path, counters, [], engine=self.engine)
        reporter = Reporter(self.run.log, total_steps=cfg.total_steps, start_step=counters.step,
                            enabled=self.env.is_main)
        self.engine.module.train()
        window, step_losses = self._new_window(), []
        while counters.step < cfg.total_steps:
            step_losses.append(self._optimizer_step(counters, window))
            reporter.advance()
            if counters.step % cfg.report_steps == 0 or counters.step == cfg.total_steps:
                self._report(reporter, counters, window)
                window = self._new_window()
            if self.run.train.eval_dataset_path and (counters.step % cfg.eval_interval == 0
                                                     or counters.step == cfg.total_steps):
                result.eval_losses.append((counters.step, self._evaluate(reporter, counters.step)))
            if counters.step % cfg.save_checkpoint_steps == 0 or counters.step == cfg.total_steps:
                self._save(counters)
        reporter.close()
        result.losses = torch.stack(step_losses).tolist() if step_losses else []
        return result

    def _new_window(self) -> Window:
        zero = torch.zeros((), device=self.device, dtype=torch.float32)
        return Window(loss=zero.clone(), grad_norm=zero.clone())

    def _optimizer_step(self, counters: ckpt.Counters, window: Window) -> torch.Tensor:
        """One optimizer step over ``accumulation_steps`` micro-batches; returns its mean loss (on device)."""
        steps = self.cfg.accumulation_steps
        step_loss = torch.zeros((), device=self.device, dtype=torch.float32)
        for micro in range(steps):
            batch = next(self.loader)
            last = micro == steps - 1
            with self.engine.accumulating(last):
                out = self.engine.forward(batch)
                self.engine.backward(out.loss, last=last)
            step_loss += out.loss.detach().float()
            tokens = int((batch.seg > 0).sum())  # a CPU batch: no device sync
            window.tokens += tokens
            counters.tokens += tokens
        norm = self.engine.step()
        counters.step += 1
        counters.micro_step += steps
        window.loss += step_loss
        window.grad_norm += norm.to(self.device, torch.float32)
        window.micro_steps += steps
        window.steps += 1
        return step_loss / steps

    def _report(self, reporter: Reporter, counters: ckpt.Counters, window: Window) -> None:
        """Gather the window from all ranks (the one host sync of a report window) and log it."""
        sums = torch.stack([window.loss, window.grad_norm, torch.tensor(float(window.tokens), device=self.device)])
        sums = all_reduce_sum(self.env, sums).tolist()
        world = self.env.world_size
        elapsed = reporter.elapsed()
        nominal = self.cfg.batch_size * self._seq_length() * window.micro_steps * world
        reporter.report(Report(step=counters.step, total_steps=self.cfg.total_steps,
                               loss=sums[0] / (window.micro_steps * world), lr=self.engine.lr(),
                               grad_norm=sums[1] / (window.steps * world), tokens_per_s=nominal / elapsed,
                               real_tokens_per_s=sums[2] / elapsed))

    def _seq_length(self) -> int:
        return int(self.loader.seq_length)

    def _evaluate(self, reporter: Reporter, step: int) -> float:
        """Token-weighted mean loss over the eval set (all ranks), reported with its perplexity: the sums of
        ``evaluate_dataset_loss``, the function ``scripts/evaluate_ppl.py`` reports too."""
        loader = build_loader(self.run, self.env, self.run.train.eval_dataset_path, shuffle=False)
        batches = itertools.islice(loader, self.cfg.eval_batches) if self.cfg.eval_batches else loader.epoch_batches()
        dtype = AUTOCAST_DTYPES.get(self.engine.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            loss_sum, tokens = evaluate_dataset_loss(self.engine.module, batches)
        sums = torch.tensor([loss_sum, tokens], device=self.device, dtype=torch.float64)
        total_loss, tokens = all_reduce_sum(self.env, sums).tolist()
        loss = total_loss / max(tokens, 1.0)
        reporter.report_eval(step, loss, int(tokens))
        return loss

    def _save(self, counters: ckpt.Counters) -> None:
        path = ckpt.checkpoint_path(self.cfg.output_model_path, counters.step)
        ckpt.save_training_checkpoint(self.engine, self.loader, counters, self.fingerprint, path,
                                      lora_only=self.run.lora.use_lora)
