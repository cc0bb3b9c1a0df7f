"""A DeepSpeed checkpoint directory (ZeRO stage 1, 2 or 3) -> one TencentPretrain weight file.

DeepSpeed writes ``DIR/latest`` (the tag) and ``DIR/<tag>/`` with ``mp_rank_00_model_states.pt`` and one
``*_optim_states.pt`` per data-parallel rank holding that rank's fp32 partition. DeepSpeed's own
``zero_to_fp32`` utilities reassemble the fp32 weights; they are used here as a library, in lazy mode, so
tensors are gathered one at a time while the output is written.

DeepSpeed unpickles its files freely (``torch.load(weights_only=False)``), so a crafted checkpoint directory
could run code. Here every file is first read with torch's restricted unpickler and an allow-list of the few
classes DeepSpeed writes (``check_deepspeed_files``), and DeepSpeed's own reads happen inside
``restricted_deepspeed_loading``, which makes them restricted too. The trainer's resume goes through the same two.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
from collections.abc import Iterator
from typing import Any

import torch

from tencentpretrain.checkpoint import check_finite, is_directory_output, refusal_reason, torch_load_restricted
from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.stream import TENCENTPRETRAIN_BLOCKS, StateWriter, cast, expected_shapes
from tencentpretrain.convert.weight_map import check_complete
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.models.capabilities import word_embedding_key
from tencentpretrain.vocab.check import check_vocab_sizes

logger = logging.getLogger(__name__)


def _zero_to_fp32():
    try:
        from deepspeed.utils import zero_to_fp32
    except ImportError:
        raise ConfigError(
            "reading a DeepSpeed checkpoint needs the deepspeed package: pip install deepspeed "
            "(or run the zero_to_fp32.py that DeepSpeed copied into the checkpoint directory)"
        ) from None
    return zero_to_fp32


# The classes DeepSpeed pickles into its checkpoints besides tensors and plain data (ZeRO-1/2/3 optimizer states:
# the loss scaler, the ZeRO stage enum, bf16/ZeRO-1/2 fragment addresses). Nothing else is ever unpickled.
DEEPSPEED_CLASSES = (
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
)
_FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def deepspeed_safe_globals() -> list[Any]:
    """The allowed DeepSpeed classes that this DeepSpeed version has."""
    found = []
    for module, name in DEEPSPEED_CLASSES:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return found


def check_deepspeed_files(checkpoint_dir: str, tag: str) -> None:
    """Read every ``.pt`` file of ``checkpoint_dir/tag`` with the restricted unpickler (memory-mapped: only the
    pickles are read); a file holding anything but tensors, plain data and DeepSpeed's allowed classes is a
    CheckpointError naming it."""
    allowed = deepspeed_safe_globals()
    for root, _, files in os.walk(os.path.join(checkpoint_dir, tag)):
        for name in sorted(files):
            if name.endswith(".pt"):
                torch_load_restricted(os.path.join(root, name), allowed_globals=allowed)


@contextlib.contextmanager
def restricted_deepspeed_loading() -> Iterator[None]:
    """Inside the block every ``torch.load`` (DeepSpeed's, which ask for ``weights_only=False``, included) uses
    torch's restricted unpickler with DeepSpeed's allowed classes: torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD switch
    overrides the caller's choice."""
    saved = {name: os.environ.pop(name, None) for name in (_FORCE_WEIGHTS_ONLY, _FORCE_NO_WEIGHTS_ONLY)}
    os.environ[_FORCE_WEIGHTS_ONLY] = "1"
    try:
        with torch.serialization.safe_globals(deepspeed_safe_globals()):
            yield
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"a DeepSpeed checkpoint file was refused: {refusal_reason(e)}") from None
    finally:
        os.environ.pop(_FORCE_WEIGHTS_ONLY, None)
        os.environ.update({name: value for name, value in saved.items() if value is not None})


def resolve_tag(checkpoint_dir: str, tag: str | None) -> str:
    """``tag``, or the one named in ``checkpoint_dir/latest``; errors list the tags that exist."""
    if not os.path.isdir(checkpoint_dir):
        raise CheckpointError(f"{checkpoint_dir}: not a DeepSpeed checkpoint directory")
    tags = sorted(d for d in os.listdir(checkpoint_dir) if os.path.isdir(os.path.join(checkpoint_dir, d)))
    if tag is None:
        latest = os.path.join(checkpoint_dir, "latest")
        if not os.path.isfile(latest):
            raise CheckpointError(f"{checkpoint_dir}: no 'latest' file; pass --tag (one of: {', '.join(tags)})")
        with open(latest, encoding="utf-8") as f:
            tag = f.read().strip()
    if tag not in tags:
        raise CheckpointError(f"{checkpoint_dir}: no checkpoint tagged {tag!r} (found: {', '.join(tags) or 'none'})")
    return tag


def convert_deepspeed_to_tencentpretrain(
    checkpoint_dir: str,
    output_path: str,
    *,
    tag: str | None = None,
    dtype: torch.dtype | None = None,
    config: ModelConfig | None = None,
    exclude_frozen_parameters: bool = False,
    max_shard_bytes: int = 10 * 10**9,
) -> list[str]:
    """Write the fp32 (or ``dtype``) weights of a ZeRO-1/2/3 checkpoint as one TencentPretrain checkpoint.

    With ``config`` the key set and shapes are checked against the model first. Returns the files written.
    """
    tag = resolve_tag(checkpoint_dir, tag)
    zero_to_fp32 = _zero_to_fp32()
    check_deepspeed_files(checkpoint_dir, tag)
    with restricted_deepspeed_loading():
        lazy = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(
            checkpoint_dir, tag=tag, exclude_frozen_parameters=exclude_frozen_parameters, lazy_mode=True
        )
        lazy = _strip_wrapper_prefix(lazy)
        if config is not None:
            _check_keys(lazy, config, checkpoint_dir)
        writer = StateWriter(output_path, sharded=is_directory_output(output_path), layout=TENCENTPRETRAIN_BLOCKS,
                             max_shard_bytes=max_shard_bytes, key_order=list(lazy))
        for key in list(lazy):
            tensor = lazy.pop(key).contiguous()  # gathers this one tensor
            check_finite({key: tensor}, source=f"{checkpoint_dir} (tag {tag})")
            writer.add(key, cast(tensor, dtype))
    files = writer.close()
    logger.info("%s (tag %s) -> %s: %d tensors", checkpoint_dir, tag, output_path, len(writer.keys))
    return files


def _strip_wrapper_prefix(state: dict) -> dict:
    """Drop a ``module.`` prefix that a wrapper around the model may have added to every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _check_keys(state: dict, config: ModelConfig, source: str) -> None:
    word = word_embedding_key(config)
    if word in state:
        rows = state[word].shape[0]
        check_vocab_sizes(tokenizer=None, embedding=rows, config=config.vocab_size, source=source)
    else:
        rows = config.vocab_size
    shapes = expected_shapes(config, rows)
    check_complete(state, shapes, what=f"{source} (for the config given)")
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(shapes[k])}" for k, v in state.items()
           if tuple(v.shape) != tuple(shapes[k])]
    if bad:
        raise CheckpointError(f"{source}: shapes do not fit the config: " + "; ".join(bad[:10]))
