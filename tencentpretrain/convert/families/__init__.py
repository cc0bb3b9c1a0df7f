"""The registry of HuggingFace families, keyed by the ``model_type`` of an HF ``config.json``.

Every module of this package that defines ``FAMILY = HfFamily(...)`` is a family: adding a file here is all it
takes for the converters, ``load_model`` and ``pretrain.py --pretrained_model_path`` to accept that family
(see docs/ADDING_A_COMPONENT.md, "Adding an HF family").
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
from functools import cache

from tencentpretrain.convert.hf_family import HF_CONFIG, HfFamily
from tencentpretrain.errors import ConfigError


@cache
def registry() -> dict[str, HfFamily]:
    """model_type -> family, for every ``FAMILY`` defined in this package."""
    families: dict[str, HfFamily] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        family = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILY", None)
        if family is None:
            continue
        if family.model_type in families:
            raise ConfigError(f"two HF families claim model_type {family.model_type!r}")
        families[family.model_type] = family
    return families


def get_family(model_type: str) -> HfFamily:
    """The family registered for ``model_type``; a ConfigError listing the known ones otherwise."""
    families = registry()
    if model_type not in families:
        raise ConfigError(f"no HF family is registered for model_type {model_type!r}; known: "
                          f"{', '.join(sorted(families))} (tencentpretrain/convert/families/)")
    return families[model_type]


def read_hf_config(directory: str) -> dict:
    """The ``config.json`` of an HF model directory, with errors that say what is wrong."""
    path = os.path.join(directory, HF_CONFIG)
    if not os.path.isfile(path):
        raise ConfigError(f"{directory}: not an HF model directory (no {HF_CONFIG})")
    try:
        with open(path, encoding="utf-8") as f:
            hf = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    if not isinstance(hf, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return hf


def family_of(hf: dict, source: str = "config.json") -> HfFamily:
    """The family of an HF config.json dict (by ``model_type``; files without one are old LLaMA exports)."""
    model_type = hf.get("model_type")
    architectures = hf.get("architectures") or []
    if model_type is None and (not architectures or "LlamaForCausalLM" in architectures):
        model_type = "llama"  # the configs of early LLaMA conversions carry no model_type
    if model_type is None:
        raise ConfigError(f"{source}: no model_type; cannot tell which HF family it is")
    try:
        return get_family(model_type)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
