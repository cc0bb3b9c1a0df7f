"""Declarative weight maps between TencentPretrain keys and an external format, used in both directions.

A map is a list of ``Rule(external, internal, to_internal, to_external)``; ``{}`` in a pattern stands for the
layer index. Three declarations cover the tensors that are not one-to-one:

* ``Rule.aliases``: other external names of the same tensor (HF BERT stores its MLM bias twice). Export writes
  every name; import reads the main name, or an alias when the main name is absent.
* ``Fused``: one external tensor holding several internal ones (GPT-2's ``c_attn`` = [Q | K | V]).
* ``Tie``: an internal tensor the external files may leave out because it equals (a transform of) another one
  (a tied ``lm_head``); import fills it from its source, export may leave it out.

Conversion works on any subset of keys (one shard at a time) and reports every key it cannot map;
``check_complete`` then verifies that all expected keys were produced. ``ImportPlan`` / ``ExportPlan`` are the
key-level plans the shard-by-shard driver (``tencentpretrain.convert.hf``) checks before reading any tensor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    aliases: tuple[str, ...] = ()  # other external names of the same tensor


@dataclass(frozen=True)
class Fused:
    """One ``external`` tensor that holds the ``internals`` (in order): ``split`` it on import, ``join`` on export."""

    external: str
    internals: tuple[str, ...]
    split: Callable[[torch.Tensor], Sequence[torch.Tensor]]
    join: Callable[[Sequence[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Tie:
    """Internal ``target`` = ``transform(source)`` when the external files lack ``target`` (keys without ``{}``).

    ``exported=False``: the export leaves ``target`` out, because the external format rebuilds it itself."""

    target: str
    source: str
    transform: Transform = _identity
    exported: bool = True


def _compile(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(r"\{\}", r"(\d+)") + "$")


class WeightMap:
    """A bidirectional key/tensor mapping built from rules."""

    def __init__(
        self,
        name: str,
        rules: Iterable[Rule],
        ignored_external: Iterable[str] = (),
        *,
        fused: Iterable[Fused] = (),
        ties: Iterable[Tie] = (),
    ) -> None:
        self.name = name
        self.rules = list(rules)
        self.fused = list(fused)
        self.ties = list(ties)
        self.ignored_external = list(ignored_external)
        self._external = [(_compile(r.external), r) for r in self.rules]
        self._internal = [(_compile(r.internal), r) for r in self.rules]
        self._aliases = [(_compile(a), r) for r in self.rules for a in r.aliases]
        self._fused_external = [(_compile(f.external), f) for f in self.fused]
        self._fused_internal = [(_compile(p), (f, i)) for f in self.fused for i, p in enumerate(f.internals)]
        self._ignored = [re.compile(p) for p in self.ignored_external]

    # ------------------------------------------------------------------ whole (or partial) state dicts
    def to_internal(self, state: Mapping[str, torch.Tensor], *, source: str = "") -> dict[str, torch.Tensor]:
        """External keys -> TencentPretrain keys (ties filled). Unknown keys raise (except the ignored ones)."""
        plan = self.import_plan(state, source=source)
        out: dict[str, torch.Tensor] = {}
        for key, tensor in state.items():
            out.update(plan.convert(key, tensor))
        return out

    def to_external(self, state: Mapping[str, torch.Tensor], *, source: str = "",
                    drop_ties: bool = False) -> dict[str, torch.Tensor]:
        """TencentPretrain keys -> external keys (aliases written, fused tensors joined). Unknown keys raise.

        ``drop_ties``: leave out the tie targets the external format rebuilds itself (``Tie.exported=False``)."""
        plan = self.export_plan(state, source=source, drop_ties=drop_ties)
        out: dict[str, torch.Tensor] = {}
        for key, tensor in state.items():
            out.update(plan.convert(key, tensor))
        plan.finish()
        return out

    # ------------------------------------------------------------------ key-level plans
    def internal_keys(self, keys: Iterable[str], *, source: str = "") -> dict[str, str]:
        """external key -> TencentPretrain key of the one-to-one rules, without touching tensors; unknown keys raise
        (all of them listed), so a converter can check a checkpoint before reading it."""
        plan = self.import_plan(keys, source=source)
        return {key: names[0] for key, names in plan.outputs.items() if len(names) == 1}

    def external_keys(self, keys: Iterable[str], *, source: str = "") -> dict[str, str]:
        """TencentPretrain key -> external key of the one-to-one rules, without touching tensors; unknown keys raise."""
        plan = self.export_plan(keys, source=source)
        return {key: names[0] for key, names in plan.outputs.items() if len(names) == 1}

    def import_plan(self, keys: Iterable[str], *, source: str = "") -> ImportPlan:
        """What every external key becomes; unknown keys raise, all of them listed."""
        keys = list(keys)
        present = set(keys)
        steps: dict[str, tuple[Rule | Fused, str]] = {}
        alias_hits, leftovers = [], []
        for key in keys:
            match = self._match(self._external, key) or self._match(self._fused_external, key)
            if match is not None:
                steps[key] = match
            elif (alias := self._match(self._aliases, key)) is not None:
                alias_hits.append((key, alias))
            elif not any(p.search(key) for p in self._ignored):
                leftovers.append(key)
        covered = set()
        for key, (rule, layer) in alias_hits:  # an alias stands in for an absent main name, once
            main = rule.external.replace("{}", layer)
            if main not in present and main not in covered:
                steps[key] = (rule, layer)
                covered.add(main)
        self._raise_leftovers(leftovers, f"{self.name} keys with no TencentPretrain equivalent", source)
        return ImportPlan(steps, self.ties)

    def export_plan(self, keys: Iterable[str], *, source: str = "", drop_ties: bool = False) -> ExportPlan:
        """What every TencentPretrain key becomes; unknown keys raise, all of them listed."""
        skipped = {tie.target for tie in self.ties if drop_ties and not tie.exported}
        steps: dict[str, tuple[Rule | tuple[Fused, int], str]] = {}
        leftovers = []
        for key in keys:
            if key in skipped:
                continue
            match = self._match(self._internal, key) or self._match(self._fused_internal, key)
            if match is None:
                leftovers.append(key)
            else:
                steps[key] = match
        self._raise_leftovers(leftovers, f"TencentPretrain keys with no {self.name} equivalent", source)
        return ExportPlan(steps)

    def internal_keys_for_layers(self, layers_num: int) -> set[str]:
        """The TencentPretrain keys the rules and fused tensors name for layers ``0 .. layers_num - 1`` (not the
        ties): the complete key set of a model with that many layers, for a checkpoint that comes without a
        config to build the model from."""
        patterns = [r.internal for r in self.rules] + [p for f in self.fused for p in f.internals]
        layers = [str(i) for i in range(layers_num)]
        return {_layer(p, i) for p in patterns for i in (layers if "{}" in p else [""])}

    @staticmethod
    def _match(table: list[tuple[re.Pattern, object]], key: str) -> tuple[object, str] | None:
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


def _layer(pattern: str, layer: str) -> str:
    return pattern.replace("{}", layer)


class ImportPlan:
    """External key -> the TencentPretrain tensors it becomes (``outputs``), with the ties the files leave to us."""

    def __init__(self, steps: dict[str, tuple[Rule | Fused, str]], ties: Iterable[Tie]) -> None:
        self._steps = steps
        self.layers = sorted({int(layer) for _, layer in steps.values() if layer})  # layer indices seen
        self.outputs: dict[str, list[str]] = {
            key: [_layer(p, layer) for p in (rule.internals if isinstance(rule, Fused) else (rule.internal,))]
            for key, (rule, layer) in steps.items()
        }
        produced = {name for names in self.outputs.values() for name in names}
        self.ties = [t for t in ties if t.target not in produced and t.source in produced]
        self._ties_by_source: dict[str, list[Tie]] = {}
        for tie in self.ties:
            self._ties_by_source.setdefault(tie.source, []).append(tie)

    def internal_keys(self) -> set[str]:
        """Every TencentPretrain key the plan produces (ties included)."""
        return {n for names in self.outputs.values() for n in names} | {t.target for t in self.ties}

    def convert(self, key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        """The TencentPretrain tensors of one external tensor (empty for an ignored key)."""
        if key not in self._steps:
            return {}
        rule, layer = self._steps[key]
        if isinstance(rule, Fused):
            out = dict(zip(self.outputs[key], rule.split(tensor), strict=True))
        else:
            out = {self.outputs[key][0]: rule.to_internal(tensor)}
        for name, converted in list(out.items()):
            for tie in self._ties_by_source.get(name, ()):
                out[tie.target] = tie.transform(converted)
        return out


class ExportPlan:
    """TencentPretrain key -> the external tensors it becomes; fused tensors wait until all their parts arrived."""

    def __init__(self, steps: dict[str, tuple[Rule | tuple[Fused, int], str]]) -> None:
        self._steps = steps
        self.layers = sorted({int(layer) for _, layer in steps.values() if layer})  # layer indices seen
        self.outputs: dict[str, list[str]] = {}
        for key, (rule, layer) in steps.items():
            names = (rule[0].external,) if isinstance(rule, tuple) else (rule.external, *rule.aliases)
            self.outputs[key] = [_layer(n, layer) for n in names]
        self._parts: dict[str, dict[int, torch.Tensor]] = {}

    def external_keys(self) -> set[str]:
        return {n for names in self.outputs.values() for n in names}

    def convert(self, key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        """The external tensors ready after ``key`` (a fused tensor once its last part arrives)."""
        if key not in self._steps:
            return {}  # a tie target the external format rebuilds
        rule, _ = self._steps[key]
        if isinstance(rule, tuple):
            fused, index = rule
            name = self.outputs[key][0]
            parts = self._parts.setdefault(name, {})
            parts[index] = tensor
            if len(parts) < len(fused.internals):
                return {}
            del self._parts[name]
            return {name: fused.join([parts[i] for i in range(len(fused.internals))])}
        converted = rule.to_external(tensor)
        return {name: converted for name in self.outputs[key]}

    def finish(self) -> None:
        """Raise if a fused tensor is missing parts."""
        if self._parts:
            raise CheckpointError(f"{len(self._parts)} fused tensors lack some of their parts: "
                                  + ", ".join(sorted(self._parts)[:20]))


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
