"""Declarative weight maps between TencentPretrain keys and an external format, used in both directions.

A map is a list of ``Rule(external, internal, to_internal, to_external)``; ``{}`` in a pattern stands for the
layer index. Conversion works on any subset of keys (one shard at a time) and reports every key it cannot
map; ``check_complete`` then verifies that all expected keys were produced.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from tencentpretrain.errors import CheckpointError

Transform = Callable[[torch.Tensor], torch.Tensor]


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass(frozen=True)
class Rule:
    """``external`` <-> ``internal`` key patterns, with the tensor transform for each direction."""

    external: str
    internal: str
    to_internal: Transform = _identity
    to_external: Transform = _identity


def _compile(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(r"\{\}", r"(\d+)") + "$")


class WeightMap:
    """A bidirectional key/tensor mapping built from rules."""

    def __init__(self, name: str, rules: Iterable[Rule], ignored_external: Iterable[str] = ()) -> None:
        self.name = name
        self.rules = list(rules)
        self._external = [(_compile(r.external), r) for r in self.rules]
        self._internal = [(_compile(r.internal), r) for r in self.rules]
        self._ignored = [re.compile(p) for p in ignored_external]

    def to_internal(self, state: Mapping[str, torch.Tensor], *, source: str = "") -> dict[str, torch.Tensor]:
        """External keys -> TencentPretrain keys. Unknown keys raise (except the ignored ones)."""
        out, leftovers = {}, []
        for key, tensor in state.items():
            match = self._match(self._external, key)
            if match is None:
                if not any(p.search(key) for p in self._ignored):
                    leftovers.append(key)
                continue
            rule, layer = match
            out[rule.internal.replace("{}", layer)] = rule.to_internal(tensor)
        self._raise_leftovers(leftovers, f"{self.name} keys with no TencentPretrain equivalent", source)
        return out

    def to_external(self, state: Mapping[str, torch.Tensor], *, source: str = "") -> dict[str, torch.Tensor]:
        """TencentPretrain keys -> external keys. Unknown keys raise."""
        out, leftovers = {}, []
        for key, tensor in state.items():
            match = self._match(self._internal, key)
            if match is None:
                leftovers.append(key)
                continue
            rule, layer = match
            out[rule.external.replace("{}", layer)] = rule.to_external(tensor)
        self._raise_leftovers(leftovers, f"TencentPretrain keys with no {self.name} equivalent", source)
        return out

    def internal_keys(self, keys: Iterable[str], *, source: str = "") -> dict[str, str]:
        """external key -> TencentPretrain key, without touching tensors; ignored keys are left out and
        unknown keys raise (all of them listed), so a converter can check a checkpoint before reading it."""
        return self._plan(self._external, keys, "internal", f"{self.name} keys with no TencentPretrain equivalent",
                          source, ignore=True)

    def external_keys(self, keys: Iterable[str], *, source: str = "") -> dict[str, str]:
        """TencentPretrain key -> external key, without touching tensors; unknown keys raise."""
        return self._plan(self._internal, keys, "external", f"TencentPretrain keys with no {self.name} equivalent",
                          source, ignore=False)

    def _plan(self, table, keys, side: str, what: str, source: str, *, ignore: bool) -> dict[str, str]:
        plan, leftovers = {}, []
        for key in keys:
            match = self._match(table, key)
            if match is None:
                if not (ignore and any(p.search(key) for p in self._ignored)):
                    leftovers.append(key)
                continue
            rule, layer = match
            plan[key] = getattr(rule, side).replace("{}", layer)
        self._raise_leftovers(leftovers, what, source)
        return plan

    @staticmethod
    def _match(table: list[tuple[re.Pattern, Rule]], key: str) -> tuple[Rule, str] | None:
        for pattern, rule in table:
            m = pattern.match(key)
            if m:
                return rule, (m.group(1) if m.groups() else "")
        return None

    @staticmethod
    def _raise_leftovers(leftovers: list[str], what: str, source: str) -> None:
        if leftovers:
            where = f"{source}: " if source else ""
            raise CheckpointError(f"{where}{len(leftovers)} {what}: {', '.join(sorted(leftovers)[:20])}")


def check_complete(produced: Iterable[str], expected: Iterable[str], *, what: str) -> None:
    """Raise unless exactly the ``expected`` keys were produced, listing the leftovers both ways."""
    produced, expected = set(produced), set(expected)
    missing, extra = sorted(expected - produced), sorted(produced - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"not produced ({len(missing)}): {', '.join(missing[:20])}")
        if extra:
            parts.append(f"not expected ({len(extra)}): {', '.join(extra[:20])}")
        raise CheckpointError(f"{what} is incomplete: " + "; ".join(parts))
