"""What the training loop drives: forward, backward, optimizer step and resume state, behind one interface.

``LocalEngine`` is one process or torch DDP (mixed precision by autocast with fp32 master weights, GradScaler for
fp16, gradient clipping, ``no_sync`` on accumulation micro-steps). ``DeepSpeedEngine`` wraps a DeepSpeed engine,
which owns precision, ZeRO partitioning, clipping and accumulation itself. The loop counts optimizer steps and
micro-steps; the engines never read the clock or sync with the host.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Protocol

import torch
from torch import nn

from tencentpretrain.atomic import atomic_path
from tencentpretrain.checkpoint import load_checkpoint, save_file, torch_load_restricted
from tencentpretrain.data.loader import Batch
from tencentpretrain.errors import CheckpointError
from tencentpretrain.targets.output import TargetOutput
from tencentpretrain.training.parallel import DistEnv, unwrap
from tencentpretrain.transforms.lora import lora_state_dict

logger = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZER_FILE = "optimizer.pt"
DEEPSPEED_DIR = "deepspeed"


class TrainEngine(Protocol):
    """The interface the loop uses."""

    env: DistEnv
    precision: str

    @property
    def module(self) -> nn.Module: ...

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager: ...

    def forward(self, batch: Batch) -> TargetOutput: ...

    def backward(self, loss: torch.Tensor, *, last: bool) -> None: ...

    def step(self) -> torch.Tensor: ...

    def lr(self) -> float: ...

    def save_state(self, directory: str) -> None: ...

    def load_state(self, directory: str, weights_path: str) -> None: ...

    def export_weights(self, directory: str, path: str, *, lora_only: bool) -> None: ...


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    return batch.to(device, non_blocking=True)  # also a dict tgt (bert) and decoder inputs (Seq2SeqBatch)


class LocalEngine:
    """One process or torch DDP."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, *, env: DistEnv, precision: str,
                 max_grad_norm: float, accumulation_steps: int) -> None:
        self.model, self.optimizer, self.scheduler, self.env = model, optimizer, scheduler, env
        self.precision = precision
        self.max_grad_norm = max_grad_norm if max_grad_norm > 0 else float("inf")
        self.accumulation_steps = accumulation_steps
        self.scaler = torch.amp.GradScaler(env.device.type) if precision == "fp16" else None
        self.params = [p for p in model.parameters() if p.requires_grad]

    @property
    def module(self) -> nn.Module:
        return unwrap(self.model)

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager:
        """DDP skips the gradient all-reduce on every micro-step but the last of an optimizer step."""
        if not last and isinstance(self.model, nn.parallel.DistributedDataParallel):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def forward(self, batch: Batch) -> TargetOutput:
        batch = _to_device(batch, self.env.device)
        dtype = AUTOCAST_DTYPES.get(self.precision)
        with torch.autocast(self.env.device.type, dtype=dtype, enabled=dtype is not None):
            return self.model(batch.src, batch.tgt, batch.seg, batch.loss_mask, **batch.model_kwargs())

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        loss = loss / self.accumulation_steps
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self) -> torch.Tensor:
        """Clip, step, advance the schedule, clear the gradients; returns the pre-clipping global norm."""
        norm = self.clip()
        self.apply(skip=False)
        return norm

    def clip(self) -> torch.Tensor:
        """The first half of ``step``: unscale (fp16) and clip; returns the pre-clipping global norm."""
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        return torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm).detach()

    def apply(self, *, skip: bool) -> None:
        """The second half of ``step``: update the weights (unless ``skip``), advance the schedule, clear the
        gradients. A skipped step leaves weights and optimizer state as they were."""
        if skip:
            pass
        elif self.scaler:
            self.scaler.step(self.optimizer)
        else:
            self.optimizer.step()
        if self.scaler:
            self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # ------------------------------------------------------------------ resume state
    def save_state(self, directory: str) -> None:
        """Optimizer, schedule and loss scale (identical on every rank, so rank 0 writes them)."""
        if self.env.is_main:
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler else None}
            with_atomic_torch_save(state, os.path.join(directory, OPTIMIZER_FILE))

    def load_state(self, directory: str, weights_path: str) -> None:
        lora_only = any("lora_" in n for n, p in self.module.named_parameters() if p.requires_grad)
        if lora_only:
            from tencentpretrain.training.model_setup import load_lora_weights

            load_lora_weights(self.module, weights_path)
        else:
            load_checkpoint(self.module, weights_path)
        state = torch_load_restricted(os.path.join(directory, OPTIMIZER_FILE), mmap=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])

    def export_weights(self, directory: str, path: str, *, lora_only: bool) -> None:
        """Rank 0 writes the model (or only its LoRA tensors) as a TencentPretrain .bin at ``path``."""
        if self.env.is_main:
            save_file(lora_state_dict(self.module) if lora_only else self.module.state_dict(), path)


def with_atomic_torch_save(obj: Any, path: str) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class DeepSpeedEngine:
    """A DeepSpeed engine behind the loop's interface; DeepSpeed accumulates over its own micro-steps."""

    def __init__(self, engine: Any, *, env: DistEnv, precision: str) -> None:
        self.engine, self.env, self.precision = engine, env, precision
        self.norm_known = True

    @property
    def module(self) -> nn.Module:
        return self.engine.module

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def forward(self, batch: Batch) -> TargetOutput:
        batch = _to_device(batch, self.engine.device)
        return self.engine(batch.src, batch.tgt, batch.seg, batch.loss_mask, **batch.model_kwargs())

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        self.engine.backward(loss)  # scaled by 1 / gradient_accumulation_steps inside
        if not last:
            self.engine.step()  # a micro-step: DeepSpeed only counts it

    def step(self) -> torch.Tensor:
        if not self.engine.is_gradient_accumulation_boundary():
            raise RuntimeError("DeepSpeed's accumulation boundary does not match the loop's")
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        self.norm_known = norm is not None  # DeepSpeed has no norm when it did not clip (a NaN stands for it)
        return torch.as_tensor(float("nan") if norm is None else norm, dtype=torch.float32)

    def lr(self) -> float:
        return self.engine.get_lr()[0]

    def save_state(self, directory: str) -> None:
        """Every rank writes its ZeRO partition under ``directory/deepspeed/<tag>``."""
        self.engine.save_checkpoint(os.path.join(directory, DEEPSPEED_DIR), tag=self.tag)

    def load_state(self, directory: str, weights_path: str) -> None:
        """DeepSpeed reads its own files, after each was checked with an allow-list of the classes DeepSpeed
        writes and under torch's restricted unpickler (DeepSpeed itself would unpickle anything)."""
        from tencentpretrain.convert.deepspeed_checkpoint import check_deepspeed_files, restricted_deepspeed_loading

        checkpoint_dir = os.path.join(directory, DEEPSPEED_DIR)
        check_deepspeed_files(checkpoint_dir, self.tag)
        with restricted_deepspeed_loading():
            path, _ = self.engine.load_checkpoint(checkpoint_dir, tag=self.tag, load_optimizer_states=True,
                                                  load_lr_scheduler_states=True)
        if path is None:
            raise CheckpointError(f"{directory}: DeepSpeed could not load its checkpoint")

    def export_weights(self, directory: str, path: str, *, lora_only: bool) -> None:
        """Rank 0 consolidates the fp32 weights of the checkpoint just saved into a TencentPretrain .bin."""
        if not self.env.is_main:
            return
        from tencentpretrain.training.deepspeed_glue import consolidated_state_dict

        state = consolidated_state_dict(os.path.join(directory, DEEPSPEED_DIR), self.tag, only_trainable=lora_only)
        if lora_only:
            state = {k: v for k, v in state.items() if "lora_" in k}
        save_file(state, path)

    tag = "engine"
