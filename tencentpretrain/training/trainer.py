"""The training loop and the assembly of a run (``train(run)``), shared by every process mode.

``step`` counts optimizer steps and ``micro_step`` micro-batches; the schedule spans ``--total_steps`` optimizer
steps. The loop syncs with the host only on report, evaluation and checkpoint steps.

Non-finite steps: by default the first step whose loss or gradient norm is NaN or infinite is remembered on the
device and the run stops with ``NonFiniteError`` at the next report or checkpoint, before anything is saved (the
weights are also checked right before every save). With ``--skip_nonfinite_steps N`` each step is checked on the
host before the update (one sync per step) and up to N bad steps are skipped.
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tencentpretrain.checkpoint import copy_checkpoint_file
from tencentpretrain.errors import ConfigError, TencentPretrainError
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


class NonFiniteError(TencentPretrainError):
    """The loss, the gradient norm or the weights became NaN or infinite (a diverging run)."""


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


class NonFiniteWatch:
    """The first step whose loss or gradient norm was not finite, kept on the device until the next host sync."""

    def __init__(self, device: torch.device) -> None:
        self.step = torch.full((), -1, device=device, dtype=torch.int64)  # -1: none yet
        self.values = torch.zeros(2, device=device, dtype=torch.float32)  # its (loss, grad norm)

    def record(self, step: int, loss: torch.Tensor, norm: torch.Tensor, bad: torch.Tensor) -> None:
        device = self.step.device  # DeepSpeed reports the norm on the CPU
        first = bad.to(device) & (self.step < 0)
        self.step = torch.where(first, torch.full_like(self.step, step), self.step)
        values = torch.stack([loss.detach().float().to(device), norm.detach().float().to(device)])
        self.values = torch.where(first, values, self.values)


# ---------------------------------------------------------------------- assembly
def build_engine(run: RunConfig, env: DistEnv, vocab: Vocabulary) -> TrainEngine:
    """The model, optimizer and schedule of the run behind the engine interface of its process mode."""
    if run.deepspeed.deepspeed:
        return _build_deepspeed_engine(run, env, vocab)
    model = build_run_model(run, vocab.size, env, None, vocab.tgt_size).to(env.device)
    # On the device, so that the saved old rows of new_rows are copied back there without a host round trip; and
    # before DDP, which reads the requires_grad flags.
    freeze = _freeze_for_vocabulary(run, model)
    if run.train.gradient_checkpointing or run.deepspeed.deepspeed_checkpoint_activations:
        enable_activation_checkpointing(model)
    model = wrap_ddp(model, env)
    optimizer = build_optimizer(model, run.optim)
    if freeze is not None:
        freeze.attach_optimizer(optimizer)
    scheduler = build_scheduler(optimizer, run.optim, run.train.total_steps)
    return LocalEngine(model, optimizer, scheduler, env=env, precision=default_precision(run.train.precision, env),
                       max_grad_norm=run.optim.max_grad_norm, accumulation_steps=run.train.accumulation_steps)


def default_precision(precision: str | None, env: DistEnv) -> str:
    """``--precision`` when given; otherwise bf16 mixed precision on GPUs that have bfloat16 (fp32 master weights:
    the same updates at about half the activation memory and on the tensor cores), fp32 on the CPU and on older
    GPUs (said once in the log)."""
    if precision is not None:
        return precision
    if env.device.type != "cuda":
        return "fp32"
    if torch.cuda.is_bf16_supported():
        logger.info("Training in bf16 mixed precision (fp32 master weights); --precision fp32 turns it off.")
        return "bf16"
    logger.warning("This GPU has no bfloat16: training in fp32 (--precision fp16 for mixed precision with loss "
                   "scaling).")
    return "fp32"


def _build_deepspeed_engine(run: RunConfig, env: DistEnv, vocab: Vocabulary) -> DeepSpeedEngine:
    from tencentpretrain.training import deepspeed_glue as glue

    deepspeed = glue.import_deepspeed()
    cfg = glue.to_deepspeed_dict(run, glue.read_deepspeed_json(run.deepspeed.deepspeed_config), env)
    model = build_run_model(run, vocab.size, env, cfg, vocab.tgt_size)
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
        **({"tgt_vocab_size": vocab.tgt_size} if vocab.tgt_size is not None else {}),
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
    if env.is_main:
        ckpt.remove_interrupted_saves(run.train.output_model_path)
    barrier(env)
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
        copy_checkpoint_file(last, run.train.output_model_path)
        logger.info("saved the final model to %s", run.train.output_model_path)
    barrier(engine.env)


class Loop:
    """The optimisation loop: micro-batches, optimizer steps, reports, evaluations and checkpoints."""

    def __init__(self, run: RunConfig, engine: TrainEngine, loader: Any, print_: dict[str, Any]) -> None:
        self.run, self.engine, self.loader, self.fingerprint = run, engine, loader, print_
        self.env = engine.env
        self.cfg = run.train
        self.device = self.env.device
        self.watch = NonFiniteWatch(self.device)
        self.skipped = 0  # steps skipped for non-finite values (--skip_nonfinite_steps)

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
        mean_loss = step_loss / steps
        if self.cfg.skip_nonfinite_steps:
            norm = self.engine.clip()
            skip = self._skip_nonfinite(counters.step + 1, mean_loss, norm)
            self.engine.apply(skip=skip)
        else:
            norm, skip = self.engine.step(), False
            self.watch.record(counters.step + 1, mean_loss, norm, self._nonfinite(mean_loss, norm))
        counters.step += 1
        counters.micro_step += steps
        if not skip:  # a skipped step's NaN stays out of the report
            window.loss += step_loss
            window.grad_norm += norm.to(self.device, torch.float32)
            window.micro_steps += steps
            window.steps += 1
        return mean_loss

    # ------------------------------------------------------------------ non-finite steps
    def _nonfinite(self, loss: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        """Device bool: the step's loss, or its gradient norm, is NaN or infinite. Under fp16 an infinite
        norm is an overflow the loss scaler handles (it skips the step and lowers the scale): only the loss counts."""
        bad = ~torch.isfinite(loss)
        if self.engine.precision != "fp16" and getattr(self.engine, "norm_known", True):
            bad |= ~torch.isfinite(norm.to(self.device))
        return bad

    def _skip_nonfinite(self, step: int, loss: torch.Tensor, norm: torch.Tensor) -> bool:
        """--skip_nonfinite_steps: decide on the host (all ranks agree) whether this step is skipped."""
        bad = all_reduce_sum(self.env, self._nonfinite(loss, norm).float()).item() > 0
        if not bad:
            return False
        self.skipped += 1
        values = f"loss {loss.item():.4g}, gradient norm {norm.item():.4g}"
        if self.skipped > self.cfg.skip_nonfinite_steps:
            raise NonFiniteError(self._stop_message(step, values, f"after skipping {self.cfg.skip_nonfinite_steps} "
                                                                  "such steps (--skip_nonfinite_steps)"))
        logger.warning("step %d: %s: skipped, no update (%d of --skip_nonfinite_steps %d)", step, values,
                       self.skipped, self.cfg.skip_nonfinite_steps)
        return True

    def _check_nonfinite(self) -> None:
        """Stop if a step since the start went non-finite (a host sync; called on report and save steps)."""
        rows = torch.zeros(self.env.world_size, 3, device=self.device, dtype=torch.float64)
        rows[self.env.rank] = torch.cat([self.watch.step.double().view(1), self.watch.values.double()])
        if self.env.world_size > 1:
            rows = all_reduce_sum(self.env, rows)  # every rank's (first bad step, loss, norm)
        bad = [(int(step), loss, norm) for step, loss, norm in rows.tolist() if step >= 0]
        if bad:
            step, loss, norm = min(bad)
            raise NonFiniteError(self._stop_message(step, f"loss {loss:.4g}, gradient norm {norm:.4g}", ""))

    def _check_weights_finite(self) -> None:
        """Refuse to save weights with a NaN or infinite value (all ranks agree; ZeRO-3 partitions are empty here)."""
        bad_names = [n for n, p in self.engine.module.named_parameters() if not bool(torch.isfinite(p).all())]
        count = all_reduce_sum(self.env, torch.tensor(float(len(bad_names)), device=self.device)).item()
        if count:
            detail = f"non-finite values in {', '.join(bad_names[:5])}" if bad_names else "non-finite weights"
            raise NonFiniteError(self._stop_message(None, detail, ""))

    def _stop_message(self, step: int | None, values: str, how: str) -> str:
        last = ckpt.latest_checkpoint(self.cfg.output_model_path)
        where = f"step {step}" if step is not None else "the weights to be saved"
        stopped = f"training stopped {how}".rstrip()
        previous = f"The last good checkpoint is {last}" if last else "No checkpoint was saved"
        return (f"{where}: {values} (NaN or infinite); {stopped}, nothing saved after it. {previous}. "
                "Lower --learning_rate or raise --warmup (or use --precision bf16 instead of fp16); "
                "--skip_nonfinite_steps N skips up to N such steps instead of stopping.")

    def _report(self, reporter: Reporter, counters: ckpt.Counters, window: Window) -> None:
        """Gather the window from all ranks (the one host sync of a report window) and log it."""
        self._check_nonfinite()
        sums = torch.stack([window.loss, window.grad_norm, torch.tensor(float(window.tokens), device=self.device)])
        sums = all_reduce_sum(self.env, sums).tolist()
        world = self.env.world_size
        elapsed = reporter.elapsed()
        nominal = self.cfg.batch_size * self._seq_length() * window.micro_steps * world
        reporter.report(Report(step=counters.step, total_steps=self.cfg.total_steps,
                               loss=sums[0] / (max(window.micro_steps, 1) * world), lr=self.engine.lr(),
                               grad_norm=sums[1] / (max(window.steps, 1) * world), tokens_per_s=nominal / elapsed,
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
        self._check_nonfinite()
        self._check_weights_finite()
        path = ckpt.checkpoint_path(self.cfg.output_model_path, counters.step)
        ckpt.save_training_checkpoint(self.engine, self.loader, counters, self.fingerprint, path,
                                      lora_only=self.run.lora.use_lora)
