"""Reading and writing model weights: TencentPretrain ``.bin``, ``.safetensors`` and sharded directories.

- A ``.bin`` is a ``torch.save``-d state_dict, as the original wrote it.
- A sharded directory holds shard files plus an index JSON ``{"weight_map": {key: file}, "metadata": {...}}``
  named ``tencentpretrain_model.bin.index.json`` (the original's blocks), ``pytorch_model.bin.index.json`` or
  ``model.safetensors.index.json``.
Loading is strict: missing keys, unexpected keys and shape mismatches raise a CheckpointError that lists them.
Saving is atomic: a temporary file in the same directory, then a rename, so a crash never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from tencentpretrain.atomic import atomic_path  # also imported from here by the weight writers
from tencentpretrain.errors import CheckpointError, ConfigError

INDEX_NAMES = (
    "tencentpretrain_model.bin.index.json",
    "pytorch_model.bin.index.json",
    "model.safetensors.index.json",
)
logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIX = ".safetensors"
_LIST_LIMIT = 20  # how many keys an error lists before "... and N more"

StateDict = dict[str, torch.Tensor]


# ---------------------------------------------------------------------- reading
def find_index_file(directory: str) -> str:
    """The index JSON of a sharded checkpoint directory."""
    for name in INDEX_NAMES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    single = [f for f in ("model.safetensors", "pytorch_model.bin") if os.path.isfile(os.path.join(directory, f))]
    if single:
        return os.path.join(directory, single[0])
    raise CheckpointError(
        f"{directory}: a checkpoint directory needs one of {', '.join(INDEX_NAMES)} "
        "(or model.safetensors / pytorch_model.bin); none was found"
    )


def read_index(index_path: str) -> dict[str, str]:
    """key -> shard path, from an index JSON."""
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index_path}: not a valid checkpoint index ({e})") from None
    directory = os.path.dirname(index_path)
    return {key: os.path.join(directory, file) for key, file in weight_map.items()}


def checkpoint_files(path: str) -> list[str]:
    """The weight files making up the checkpoint at ``path`` (a file, or a sharded directory)."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    if os.path.isfile(path):
        return [path]
    index = find_index_file(path)
    if not index.endswith(".json"):
        return [index]
    return sorted(set(read_index(index).values()))


def load_file(path: str, *, mmap: bool = True) -> StateDict:
    """One weight file (``.bin``/``.pt``/``.pth`` or ``.safetensors``) as a state_dict on the CPU."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        if path.endswith(SAFETENSORS_SUFFIX):
            from safetensors.torch import load_file as load_safetensors

            return load_safetensors(path, device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # corrupt, truncated or foreign files all end here
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(state, Mapping) and "module" in state and isinstance(state["module"], Mapping):
        state = state["module"]  # a DeepSpeed model-states file
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict of tensors")
    return dict(state)


def iter_state_dict(path: str) -> Iterator[tuple[str, StateDict]]:
    """Yield (file, state_dict) per shard, so a large checkpoint is never all in memory at once."""
    for file in checkpoint_files(path):
        yield file, load_file(file)


def load_state_dict(path: str) -> StateDict:
    """The whole state_dict at ``path`` (a file or a sharded directory)."""
    merged: StateDict = {}
    for _, shard in iter_state_dict(path):
        merged.update(shard)
    return merged


# ---------------------------------------------------------------------- checking and loading into a model
def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... and {len(keys) - _LIST_LIMIT} more" if len(keys) > _LIST_LIMIT else "")


def check_state_dict(
    expected: Mapping[str, torch.Tensor | torch.Size],
    found: Mapping[str, torch.Tensor],
    *,
    source: str,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
    vocabulary_keys: Sequence[str] = (),
) -> None:
    """Raise CheckpointError unless ``found`` has exactly the keys and shapes of ``expected``.

    Args:
        allow_missing / allow_unexpected: key substrings that may be absent / extra (a LoRA-only file,
            a partial load); nothing else is tolerated.
        vocabulary_keys: the keys whose first dimension is the vocabulary (``Model.vocabulary_keys()``); a
            mismatch there gets a hint about tokenizers and resizing.
    """
    shape_of = lambda v: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v)  # noqa: E731
    missing = [k for k in expected if k not in found and not any(p in k for p in allow_missing)]
    unexpected = [k for k in found if k not in expected and not any(p in k for p in allow_unexpected)]
    mismatched = [
        f"{k}: checkpoint {shape_of(found[k])} vs model {shape_of(expected[k])}"
        for k in expected
        if k in found and shape_of(found[k]) != shape_of(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): " + "; ".join(mismatched[:_LIST_LIMIT]))
    if problems:
        hint = _vocab_hint(expected, found, vocabulary_keys)
        raise CheckpointError(f"{source} does not fit the model:\n  " + "\n  ".join(problems) + hint)


def _vocab_hint(expected: Mapping, found: Mapping, vocabulary_keys: Sequence[str]) -> str:
    def rows(value) -> int:  # a tensor, or a shape
        return (tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value))[0]

    for key in vocabulary_keys:
        if key in expected and key in found and rows(expected[key]) != rows(found[key]):
            return (
                f"\n  the checkpoint has {rows(found[key])} vocabulary rows, the model {rows(expected[key])}: "
                "use the tokenizer the checkpoint was trained with, or resize the checkpoint to the new vocabulary"
            )
    return ""


def load_checkpoint(
    model: nn.Module,
    path: str,
    *,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
) -> None:
    """Load the checkpoint at ``path`` into ``model``, strictly (see ``check_state_dict``).

    A model built on the meta device gets real tensors (``assign=True``), so a large model can be built
    without memory and filled from disk.
    """
    load_state_into(model, load_state_dict(path), source=path, allow_missing=allow_missing,
                    allow_unexpected=allow_unexpected)


def load_state_into(
    model: nn.Module,
    state: StateDict,
    *,
    source: str,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
) -> None:
    """``load_checkpoint`` for a state_dict already in memory; ``source`` names it in errors."""
    expected = model.state_dict()
    vocabulary_keys = model.vocabulary_keys() if hasattr(model, "vocabulary_keys") else ()
    check_state_dict(
        expected, state, source=source, allow_missing=allow_missing, allow_unexpected=allow_unexpected,
        vocabulary_keys=vocabulary_keys,
    )
    state = {k: v for k, v in state.items() if k in expected}
    on_meta = any(p.is_meta for p in model.parameters())
    if on_meta:
        state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=on_meta)
    if on_meta and hasattr(model, "tie_parameters"):  # assign=True replaced tied parameters by separate ones
        model.tie_parameters()


# ---------------------------------------------------------------------- writing
def _contiguous_unshared(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Tensors safetensors accepts: contiguous, and no two keys sharing storage (tied weights are copied)."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        ptr = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if ptr in seen else tensor.contiguous()
        seen.add(ptr)
    return out


def save_file(state: Mapping[str, torch.Tensor], path: str) -> None:
    """Write one weight file atomically; the format follows the suffix (``.safetensors`` or torch)."""
    with atomic_path(path) as tmp:
        if path.endswith(SAFETENSORS_SUFFIX):
            from safetensors.torch import save_file as save_safetensors

            save_safetensors(_contiguous_unshared(state), tmp, metadata={"format": "pt"})
        else:
            torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)


def save_checkpoint(model_or_state: nn.Module | Mapping[str, torch.Tensor], path: str) -> None:
    """Save a model's state_dict (unwrapping DDP/DeepSpeed ``.module``) to ``path`` atomically."""
    if isinstance(model_or_state, nn.Module):
        module = getattr(model_or_state, "module", model_or_state)
        state = module.state_dict()
    else:
        state = model_or_state
    save_file(state, path)


# ---------------------------------------------------------------------- where converted files live
def is_directory_output(path: str) -> bool:
    """An output path names a sharded directory unless it ends with a weight-file suffix."""
    return not path.endswith((".bin", ".pt", ".pth", SAFETENSORS_SUFFIX))


def config_path_beside(model_path: str) -> str:
    """Where a converter writes (and later looks for) the TencentPretrain JSON config of ``model_path``:
    ``x.bin`` -> ``x_config.json``; a directory -> ``DIR/tencentpretrain_config.json``."""
    if is_directory_output(model_path):
        return os.path.join(model_path, "tencentpretrain_config.json")
    root, _ = os.path.splitext(model_path)
    return root + "_config.json"


def resolve_config_path(config_path: str | None, model_path: str) -> str:
    """``config_path``, or the config a converter wrote beside ``model_path``; a clear error when neither."""
    if config_path:
        return config_path
    beside = config_path_beside(model_path.rstrip("/"))
    if os.path.isfile(beside):
        logger.info("using the config beside the model: %s", beside)
        return beside
    raise ConfigError(
        f"{model_path}: no --config_path given and no {os.path.basename(beside)} beside the model; pass the "
        "model's JSON config, e.g. --config_path models/llama/7b_config.json"
    )
