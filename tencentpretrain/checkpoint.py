"""Reading and writing model weights: TencentPretrain ``.bin``, ``.safetensors`` and sharded directories.

- A ``.bin`` is a ``torch.save``-d state_dict, as the original wrote it.
- A sharded directory holds shard files plus an index JSON ``{"weight_map": {key: file}, "metadata": {...}}``
  named ``tencentpretrain_model.bin.index.json`` (the original's blocks), ``pytorch_model.bin.index.json`` or
  ``model.safetensors.index.json``.
Loading is strict: missing keys, unexpected keys and shape mismatches raise a CheckpointError that lists them.
Saving is atomic: a temporary file in the same directory, then a rename, so a crash never leaves a
half-written checkpoint under the final name.

Trust: torch files are unpickled with torch's restricted unpickler (tensors and plain containers only), never
freely, so a crafted file cannot run code. Every file saved here gets a SHA-256 recorded beside it
(``x.bin.sha256``, in ``sha256sum`` format; for a sharded directory, ``metadata.sha256`` of the index) and
verified when it is loaded; a file without one (a foreign checkpoint) is instead scanned for non-finite values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tencentpretrain.atomic import atomic_path
from tencentpretrain.errors import CheckpointError, ConfigError

INDEX_NAMES = (
    "tencentpretrain_model.bin.index.json",
    "pytorch_model.bin.index.json",
    "model.safetensors.index.json",
)
logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIX = ".safetensors"
CHECKSUM_SUFFIX = ".sha256"
_LIST_LIMIT = 20  # how many keys an error lists before "... and N more"
_HASH_BLOCK = 16 * 1024 * 1024
# temporaries end with the writer's process id (then, for a converter's shards, the weight-file suffix)

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
    weight_map = _read_index_json(index_path)["weight_map"]
    directory = os.path.dirname(index_path)
    return {key: os.path.join(directory, file) for key, file in weight_map.items()}


def _read_index_json(index_path: str) -> dict[str, Any]:
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        index["weight_map"]  # noqa: B018 - must be there
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path}: not a valid checkpoint index ({e})") from None
    return index


def recorded_checksums(path: str) -> dict[str, str]:
    """file -> SHA-256 recorded when the checkpoint at ``path`` was saved: each file's ``.sha256`` sidecar (written
    with the file, so it wins), else the index's ``metadata.sha256`` of a sharded directory; files without one are
    left out."""
    checksums = {}
    if os.path.isdir(path):
        index = find_index_file(path)
        if index.endswith(".json"):
            recorded = _read_index_json(index).get("metadata", {}).get("sha256", {})
            checksums = {os.path.join(path, name): digest for name, digest in recorded.items()}
    for file in checkpoint_files(path):
        if (digest := read_checksum_file(file)) is not None:
            checksums[file] = digest
    return checksums


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


def torch_load_restricted(path: str, *, mmap: bool = True, allowed_globals: Sequence[Any] = ()) -> Any:
    """``torch.load`` with torch's restricted unpickler: tensors, plain containers and primitives (plus the
    classes in ``allowed_globals``) and nothing else, so loading a crafted file cannot run code.

    Raises CheckpointError naming the file and the object it refused.
    """
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError as e:
                if not (mmap and "mmap" in str(e)):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # a pre-zip (legacy) torch file
    except pickle.UnpicklingError as e:
        if _refused_global(e) is None:
            raise CheckpointError(f"{path}: cannot read checkpoint (corrupted, or not a torch file: "
                                  f"{_first_line(e)})") from None
        raise CheckpointError(f"{path}: refused to load: {refusal_reason(e)}") from None


def _first_line(error: Exception) -> str:
    """The informative line of an error (torch's weights-only errors bury it under a generic preamble)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    specific = [line for line in lines if line.lower().startswith(("unsupported", "trying to load"))]
    return (specific or lines or [type(error).__name__])[0][:200]


def _refused_global(error: Exception) -> str | None:
    """The class or function that torch's weights-only unpickler refused, if that is what the error is about."""
    match = re.search(r"\bGLOBAL ([\w.]+)", str(error))  # "Unsupported global: GLOBAL x.y", "unsupported GLOBAL x.y"
    return match.group(1) if match else None


def refusal_reason(error: Exception) -> str:
    """A one-line reason from torch's (long) weights-only unpickling error."""
    refused = _refused_global(error)
    detail = f"it refers to {refused}" if refused else _first_line(error)
    return (f"it holds Python objects other than tensors and plain data ({detail}), and unpickling them could run "
            "code. Checkpoints written by TencentPretrain never do; do not load this file unless you can rebuild "
            "it from a trusted source")


def load_file(path: str, *, mmap: bool = True, expected_sha256: str | None = None, verify: bool = True) -> StateDict:
    """One weight file (``.bin``/``.pt``/``.pth`` or ``.safetensors``) as a state_dict on the CPU.

    With ``verify`` (the default) the file's SHA-256 is checked against ``expected_sha256`` or its ``.sha256``
    sidecar; a file with neither is scanned for non-finite values instead. ``verify=False`` only lists a file.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    expected = (expected_sha256 or read_checksum_file(path)) if verify else None
    if expected is not None:
        verify_checksum(path, expected)
    try:
        if path.endswith(SAFETENSORS_SUFFIX):
            from safetensors.torch import load_file as load_safetensors

            state = load_safetensors(path, device="cpu")
        else:
            state = torch_load_restricted(path, mmap=mmap)
    except CheckpointError:
        raise
    except Exception as e:  # corrupt, truncated or foreign files all end here (SafetensorError included)
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(state, Mapping) and "module" in state and isinstance(state["module"], Mapping):
        state = state["module"]  # a DeepSpeed model-states file
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict of tensors")
    if verify and expected is None:
        check_finite(state, source=path)
    return dict(state)


def check_finite(state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Raise CheckpointError naming the first tensor of ``state`` with a NaN or infinite value."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{source}: tensor {key} has {bad} non-finite (NaN or infinite) values of {tensor.numel()}; the "
                "checkpoint is corrupted or comes from a run that diverged: use an earlier checkpoint"
            )


# ---------------------------------------------------------------------- checksums
def sha256_file(path: str) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def checksum_file(path: str) -> str:
    """Where the SHA-256 of the weight file ``path`` is recorded: ``path.sha256``."""
    return path + CHECKSUM_SUFFIX


def read_checksum_file(path: str) -> str | None:
    """The SHA-256 recorded in ``path``'s sidecar, or None when it has none."""
    sidecar = checksum_file(path)
    if not os.path.isfile(sidecar):
        return None
    with open(sidecar, encoding="utf-8") as f:
        fields = f.read().split()
    if not fields or not re.fullmatch(r"[0-9a-f]{64}", fields[0]):
        raise CheckpointError(f"{sidecar}: not a SHA-256 checksum file (expected '<64 hex digits>  <name>')")
    return fields[0]


def write_checksum_file(path: str, digest: str) -> None:
    """Record ``digest`` for ``path`` in ``sha256sum`` format (``sha256sum -c`` checks it from its directory)."""
    with atomic_path(checksum_file(path), cleanup=False) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{digest}  {os.path.basename(path)}\n")


def verify_checksum(path: str, expected: str) -> None:
    """Raise CheckpointError unless the SHA-256 of ``path`` is ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise CheckpointError(
            f"{path}: checksum mismatch (sha256 {actual[:16]}..., recorded at save {expected[:16]}...): the file "
            "is corrupted or was changed after it was saved; restore it from a good copy (if you changed it on "
            f"purpose, delete {os.path.basename(checksum_file(path))} or the index's metadata.sha256 entry)"
        )


def iter_state_dict(path: str) -> Iterator[tuple[str, StateDict]]:
    """Yield (file, state_dict) per shard, so a large checkpoint is never all in memory at once.

    Each file is verified against the checksum recorded at save (or scanned for non-finite values)."""
    checksums = recorded_checksums(path)
    for file in checkpoint_files(path):
        yield file, load_file(file, expected_sha256=checksums.get(file))


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


def save_file(state: Mapping[str, torch.Tensor], path: str, *, sidecar: bool = True) -> str:
    """Write one weight file atomically; the format follows the suffix (``.safetensors`` or torch).

    Returns the file's SHA-256, which is also recorded in ``path.sha256`` unless ``sidecar`` is False (a shard
    whose checksum goes into an index). Errors (a full disk, ...) are CheckpointErrors naming the file.
    """
    if sidecar:
        _remove_if_exists(checksum_file(path))  # never leave an old checksum beside a new file
    with atomic_path(path) as tmp:
        try:
            if path.endswith(SAFETENSORS_SUFFIX):
                from safetensors.torch import save_file as save_safetensors

                save_safetensors(_contiguous_unshared(state), tmp, metadata={"format": "pt"})
            else:
                torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)
        except Exception as e:  # torch reports a full disk as "unexpected pos A vs B"
            raise CheckpointError(f"{path}: could not write the checkpoint ({_write_failure(e, tmp)})") from None
        digest = sha256_file(tmp)
    if sidecar:
        write_checksum_file(path, digest)
    return digest


def _write_failure(error: Exception, tmp: str) -> str:
    """What went wrong writing ``tmp``, with the free space left when the disk is the likely cause."""
    text = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
    try:
        free = shutil.disk_usage(os.path.dirname(tmp)).free
    except OSError:
        return text
    written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
    io_failure = any(sign in str(error) for sign in ("unexpected pos", "I/O error", "os error", "write"))
    if io_failure or isinstance(error, OSError) or free < 64 * 1024**2:
        text += (f"; {written} bytes were written before it failed and {free} bytes are free on "
                 f"{os.path.dirname(tmp)}: is the disk full (or a file-size limit reached)?")
    return text


def _remove_if_exists(path: str) -> None:
    if os.path.lexists(path):
        os.remove(path)


def copy_checkpoint_file(source: str, destination: str) -> None:
    """Copy a weight file with its checksum, atomically; the copy is verified against the source's checksum."""
    _remove_if_exists(checksum_file(destination))
    expected = read_checksum_file(source)
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)
        digest = sha256_file(tmp)
        if expected is not None and digest != expected:
            raise CheckpointError(f"copying {source} to {destination}: the copy's checksum differs from the one "
                                  "recorded for the source; the source is corrupted")
    write_checksum_file(destination, digest)


def move_checkpoint_file(source: str, destination: str) -> None:
    """Rename a weight file and its checksum; the checksum is in place before the file appears."""
    _remove_if_exists(checksum_file(destination))
    digest = read_checksum_file(source)
    if digest is not None:
        write_checksum_file(destination, digest)
        _remove_if_exists(checksum_file(source))
    os.replace(source, destination)


def save_checkpoint(model_or_state: nn.Module | Mapping[str, torch.Tensor], path: str) -> None:
    """Save a model's state_dict (unwrapping DDP/DeepSpeed ``.module``) to ``path`` atomically, with its
    checksum."""
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
