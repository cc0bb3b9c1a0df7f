"""DeepSpeed glue: the engine config built from the run config, ZeRO-3 partitioned construction and loading,
and the consolidated TencentPretrain state dict of a DeepSpeed checkpoint.

DeepSpeed is imported lazily, so the rest of the package works without it (``pip install 'tencentpretrain[deepspeed]'``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tencentpretrain.checkpoint import check_state_dict
from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.loading import iter_pretrained_state
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.models.capabilities import vocabulary_keys
from tencentpretrain.models.model import init_module_
from tencentpretrain.training.config import RunConfig
from tencentpretrain.training.parallel import DistEnv, broadcast_object

logger = logging.getLogger(__name__)

QUIET_STEPS_PER_PRINT = 10**9  # DeepSpeed's own progress lines duplicate ours


def import_deepspeed() -> Any:
    try:
        import deepspeed
    except ImportError:
        raise ConfigError(
            "--deepspeed needs the deepspeed package: pip install 'tencentpretrain[deepspeed]' "
            "(or pip install deepspeed ninja)"
        ) from None
    return deepspeed


def read_deepspeed_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"--deepspeed_config {path}: file not found (configs ship under models/deepspeed_*.json)")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def to_deepspeed_dict(run: RunConfig, ds_json: dict[str, Any], env: DistEnv) -> dict[str, Any]:
    """The engine config: the user's JSON with batch sizes, clipping and precision taken from the run.

    The JSON's ``optimizer`` and ``scheduler`` blocks are dropped, as in the original: the run's own optimizer
    and schedule are passed to the engine.
    """
    cfg = copy.deepcopy(ds_json)
    train = run.train
    for key in ("optimizer", "scheduler"):
        if cfg.pop(key, None) is not None:
            logger.info("DeepSpeed config: the %r block is ignored; --optimizer/--scheduler are used", key)
    cfg["train_micro_batch_size_per_gpu"] = train.batch_size
    cfg["gradient_accumulation_steps"] = train.accumulation_steps
    cfg["train_batch_size"] = train.batch_size * train.accumulation_steps * env.world_size
    cfg["gradient_clipping"] = run.optim.max_grad_norm
    cfg.setdefault("steps_per_print", QUIET_STEPS_PER_PRINT)
    cfg["zero_allow_untested_optimizer"] = True
    cfg.setdefault("zero_force_ds_cpu_optimization", False)
    _set_precision(cfg, train.precision, env)
    if run.deepspeed.enable_zero3 and zero_stage(cfg) != 3:
        raise ConfigError(
            f"--enable_zero3 but {run.deepspeed.deepspeed_config} sets ZeRO stage {zero_stage(cfg)}; "
            "use models/deepspeed_zero3_config.json (or its _cpu variant)"
        )
    return cfg


def _set_precision(cfg: dict[str, Any], precision: str | None, env: DistEnv) -> None:
    if precision is not None:
        cfg.setdefault("fp16", {})["enabled"] = precision == "fp16"
        cfg.setdefault("bf16", {})["enabled"] = precision == "bf16"
    if deepspeed_precision(cfg) == "fp16" and env.device.type == "cpu":
        raise ConfigError(
            "the DeepSpeed config enables fp16, which is not available on CPU: pass --precision bf16 or fp32, "
            "or use a CPU config such as models/deepspeed_zero3_cpu_config.json"
        )


def deepspeed_precision(cfg: dict[str, Any]) -> str:
    """fp16, bf16 or fp32, from the fp16/bf16 blocks of a DeepSpeed config."""
    for name in ("fp16", "bf16"):
        if cfg.get(name, {}).get("enabled", False) is True:
            return name
    return "fp32"


def zero_stage(cfg: dict[str, Any]) -> int:
    return int(cfg.get("zero_optimization", {}).get("stage", 0))


def offloads_optimizer(cfg: dict[str, Any]) -> bool:
    device = cfg.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device not in (None, "none")


# ---------------------------------------------------------------------- ZeRO-3: partitioned build and load
def zero3_init(cfg: dict[str, Any]) -> contextlib.AbstractContextManager:
    """Modules built inside this context have their parameters partitioned across ranks as they are created."""
    return import_deepspeed().zero.Init(config_dict_or_path=cfg, enabled=True)


def full_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Unpartitioned shape of every state-dict entry of a ZeRO-3 model."""
    shapes = {}
    for name, param in model.named_parameters():
        shapes[name] = getattr(param, "ds_shape", param.shape)
    for name, buffer in model.named_buffers():
        shapes[name] = buffer.shape
    return shapes


@contextlib.contextmanager
def gathered(params: list[nn.Parameter], *, modifier_rank: int | None = 0) -> Iterator[None]:
    """The full values of ``params`` inside the block; changes made by ``modifier_rank`` are kept."""
    if not params:
        yield
        return
    with import_deepspeed().zero.GatheredParameters(params, modifier_rank=modifier_rank):
        yield


def load_pretrained_zero3(model: nn.Module, path: str, env: DistEnv, *, allow_missing: tuple[str, ...] = (),
                          allow_unexpected: tuple[str, ...] = ()) -> None:
    """Fill a ZeRO-3 partitioned model from ``path`` (ours or an HF LLaMA directory) strictly, one tensor at a
    time.

    Only rank 0 reads the checkpoint (shard by shard, memory-mapped); each parameter is gathered alone, copied
    on rank 0 and re-partitioned, so no rank ever holds the whole model.
    """
    params = dict(model.named_parameters())
    error = None
    if env.is_main:
        error = _check_zero3_checkpoint(path, model.config, full_shapes(model), allow_missing, allow_unexpected)
    error = broadcast_object(env, error)
    if error:
        raise CheckpointError(error)
    shards = iter_pretrained_state(path, model.config) if env.is_main else None
    for file in broadcast_object(env, _shard_files(path) if env.is_main else None):
        shard = next(shards)[1] if env.is_main else {}
        keys = broadcast_object(env, sorted(k for k in shard if k in params) if env.is_main else None)
        for key in keys:
            with gathered([params[key]]):
                if env.is_main:
                    params[key].data.copy_(shard[key].to(params[key].dtype))
        logger.info("loaded %d tensors from %s", len(keys), file)


def _shard_files(path: str) -> list[str]:
    from tencentpretrain.checkpoint import checkpoint_files

    return checkpoint_files(path)


def _check_zero3_checkpoint(path: str, config: ModelConfig, expected: dict[str, torch.Size],
                            allow_missing: tuple[str, ...], allow_unexpected: tuple[str, ...] = ()) -> str | None:
    found: dict[str, tuple[int, ...]] = {}
    try:
        for _, shard in iter_pretrained_state(path, config):
            found.update({k: tuple(v.shape) for k, v in shard.items()})
        check_state_dict(expected, found, source=path, allow_missing=allow_missing,
                         allow_unexpected=allow_unexpected, vocabulary_keys=vocabulary_keys(config))
    except (CheckpointError, ConfigError) as e:
        return str(e)
    return None


@torch.no_grad()
def init_weights_zero3(model: nn.Module, env: DistEnv, *, std: float, deep_init_layers: int | None) -> None:
    """``Model.init_weights`` (and ``--deep_init``) for a ZeRO-3 partitioned model, one module at a time."""

    for name, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        with gathered(params):
            if env.is_main:
                init_module_(name, module, std=std, deep_init_layers=deep_init_layers)


# ---------------------------------------------------------------------- consolidation
def consolidated_state_dict(checkpoint_dir: str, tag: str, *, only_trainable: bool) -> dict[str, torch.Tensor]:
    """The fp32 TencentPretrain state dict of a DeepSpeed checkpoint (what ``zero_to_fp32.py`` computes)."""
    import_deepspeed()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from tencentpretrain.convert.deepspeed_checkpoint import restricted_deepspeed_loading

    with restricted_deepspeed_loading():
        state = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=tag,
                                                         exclude_frozen_parameters=only_trainable)
    return dict(state)
