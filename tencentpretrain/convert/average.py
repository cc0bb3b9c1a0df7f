"""The element-wise mean of several checkpoints of one model (the original's ``scripts/average_models.py``),
e.g. of the last few saves of a run.

Floating tensors are summed in float64 and divided once, then cast back to their dtype, so the result is the
mean rounded once (the original's running mean rounded at every step). Integer tensors must be equal in every
input. All inputs must have the same keys and shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from tencentpretrain.checkpoint import StateDict, load_state_dict, save_checkpoint
from tencentpretrain.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)


def _check_same_layout(reference: StateDict, state: StateDict, *, first: str, path: str) -> None:
    if set(reference) != set(state):
        missing, extra = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
        raise CheckpointError(f"{path} has other keys than {first}: missing {missing[:5]}, extra {extra[:5]}; "
                              "only checkpoints of the same model can be averaged")
    for key, tensor in reference.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(f"{key}: shape {tuple(state[key].shape)} in {path} but {tuple(tensor.shape)} in "
                                  f"{first}; only checkpoints of the same model can be averaged")


def average_state_dicts(paths: Sequence[str]) -> StateDict:
    """The element-wise mean of the checkpoints at ``paths`` (files or sharded directories)."""
    if not paths:
        raise ConfigError("--model_list_path needs at least one checkpoint")
    reference = load_state_dict(paths[0])
    sums = {k: v.double() if v.is_floating_point() else v for k, v in reference.items()}
    for path in paths[1:]:
        state = load_state_dict(path)
        _check_same_layout(reference, state, first=paths[0], path=path)
        for key, tensor in state.items():
            if tensor.is_floating_point():
                sums[key] += tensor.double()
            elif not torch.equal(tensor, reference[key]):
                raise CheckpointError(f"{key}: integer tensor differs between {paths[0]} and {path}; it cannot be "
                                      "averaged")
    count = len(paths)
    return {k: (v / count).to(reference[k].dtype) if reference[k].is_floating_point() else v for k, v in sums.items()}


def average_checkpoints(paths: Sequence[str], output_path: str) -> None:
    """Write the mean of ``paths`` to ``output_path`` (atomically; the format follows the suffix)."""
    save_checkpoint(average_state_dicts(paths), output_path)
    logger.info("%s: the mean of %d checkpoints", output_path, len(paths))
