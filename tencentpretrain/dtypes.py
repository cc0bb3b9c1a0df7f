"""The one dtype vocabulary of the command line: inference, evaluation and conversion accept the same names.

Canonical names are the short ones (``fp32``, ``fp16``, ``bf16``); torch's long names (``float32``, ``float16``,
``bfloat16``) are accepted everywhere as aliases. Two special values exist where they mean something: ``keep``
(converters: leave each tensor's dtype as stored) and ``auto`` (evaluation: fp32 on CPU, bf16 on a GPU).
"""

from __future__ import annotations

import torch

from tencentpretrain.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ALIASES: dict[str, str] = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
KEEP = "keep"
AUTO = "auto"


def dtype_choices(*special: str) -> list[str]:
    """``choices=`` of a ``--dtype`` flag: the ``special`` values it allows (``keep``, ``auto``), then every name."""
    return [*special, *DTYPES, *ALIASES]


def canonical_dtype(name: str, *, special: tuple[str, ...] = ()) -> str:
    """``name`` in its canonical spelling (``bfloat16`` -> ``bf16``); ``special`` values pass through."""
    if name in special or name in DTYPES:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise ConfigError(f"unknown dtype {name!r}; choose from {', '.join(dtype_choices(*special))}")


def parse_dtype(name: str, *, special: tuple[str, ...] = (KEEP,)) -> torch.dtype | None:
    """The torch dtype of ``name``; ``keep`` (when allowed) is None."""
    name = canonical_dtype(name, special=special)
    if name == KEEP:
        return None
    if name not in DTYPES:
        raise ConfigError(f"dtype {name!r} must be resolved before use")
    return DTYPES[name]
