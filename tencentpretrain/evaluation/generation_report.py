"""Side-by-side generation reports: a prompts file run through several systems (checkpoint + template +
sampling settings), written as a Markdown table (like the example tables of the ChatLLaMA README) and JSONL.

A prompts file is JSON Lines (``{"prompt" or "instruction": str, "input": str?, "category": str?, "id": str?,
"output" or "reference": str?}``; a reference answer becomes its own column) or plain text, one prompt per line.
Each system renders a prompt with its own chat template (``plain``, the ChatLLaMA format, by default; see
``tencentpretrain.tokenizers.templates``), so models tuned with different templates are compared fairly.

The report code only needs a ``Generator``: a callable from rendered prompt texts to completion texts.
``model_generator`` builds one from a ``SystemConfig`` with the project's ``generate()``; tests pass their own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.evaluation.common import ModelSpec, json_line, nonblank_lines, progress

logger = logging.getLogger(__name__)

Generator = Callable[[Sequence[str]], list[str]]  # rendered prompts -> completions, in order


# ---------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class PromptItem:
    """One row of the report."""

    id: str
    instruction: str
    input: str = ""
    category: str = ""
    reference: str = ""  # an expected answer ("output" of instruction data), shown as its own column


def read_prompts(path: str) -> list[PromptItem]:
    """Prompts of a .jsonl file (see the module docstring) or of a text file, one prompt per line."""
    jsonl = path.endswith((".jsonl", ".json"))
    items = []
    for number, line in nonblank_lines(path):
        items.append(_json_item(line, path, number, len(items)) if jsonl else PromptItem(str(len(items)), line))
    if not items:
        raise DataError(f"{path}: no prompts")
    return items


def _json_item(line: str, path: str, number: int, index: int) -> PromptItem:
    obj = json_line(line, path, number)
    text = obj.get("prompt", obj.get("instruction")) if isinstance(obj, dict) else None
    if not isinstance(text, str):
        raise DataError(f"{path}:{number}: expected an object with a string 'prompt' (or 'instruction')")
    extra = {k: str(obj.get(k) or "") for k in ("input", "category")}
    reference = obj.get("reference", obj.get("output"))
    return PromptItem(str(obj.get("id", index)), text, **extra, reference=str(reference or ""))


@dataclass(frozen=True, kw_only=True)
class SystemConfig:
    """One column: a model, the template its prompts are rendered with, and how it samples."""

    name: str
    model: ModelSpec = field(default_factory=ModelSpec)
    template: str = "plain"  # chat template (tencentpretrain.tokenizers.templates)
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off
    seed: int | None = 0  # sampling seed, so a report can be regenerated
    stop_strings: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (model paths included)."""
        return dataclasses.asdict(self)


SYSTEM_KEYS = {f.name for f in dataclasses.fields(SystemConfig) if f.name != "model"}
MODEL_KEYS = {f.name for f in dataclasses.fields(ModelSpec)}


def system_from_dict(values: Mapping[str, Any], defaults: SystemConfig, *, source: str) -> SystemConfig:
    """A SystemConfig from ``{"name": ..., "load_model_path": ..., "template": ..., "temperature": ...}``:
    model keys (ModelSpec fields) and system keys in one flat dict; unset keys come from ``defaults``."""
    unknown = sorted(set(values) - SYSTEM_KEYS - MODEL_KEYS)
    if unknown:
        known = ", ".join(sorted(SYSTEM_KEYS | MODEL_KEYS))
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {known}")
    model = dataclasses.replace(defaults.model, **{k: v for k, v in values.items() if k in MODEL_KEYS})
    own = {k: _convert(k, v, source) for k, v in values.items() if k in SYSTEM_KEYS}
    system = dataclasses.replace(defaults, model=model, **own)
    if not system.name:
        name = os.path.basename(os.path.normpath(system.model.load_model_path or "model"))
        system = dataclasses.replace(system, name=name)
    return system


def _convert(key: str, value: Any, source: str) -> Any:
    """Values given as text (``--system k=v``) get the field's type."""
    if not isinstance(value, str) or key in ("name", "template"):
        return tuple(value) if key == "stop_strings" and isinstance(value, list) else value
    try:
        if key == "stop_strings":
            return tuple(s for s in value.split("|") if s)
        if key == "seed":
            return None if value.lower() in ("", "none") else int(value)
        kind = {"max_new_tokens": int, "top_k": int}.get(key, float)
        return kind(value)
    except ValueError:
        raise ConfigError(f"{source}: {key}={value!r} is not a number") from None


def parse_system_flag(text: str, defaults: SystemConfig) -> SystemConfig:
    """``--system name=7b,load_model_path=x.bin,template=alpaca,temperature=0.7`` (stop strings joined by |)."""
    values = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"--system {text!r}: expected key=value pairs separated by commas, got {part!r}")
        values[key.strip()] = value.strip()
    return system_from_dict(values, defaults, source=f"--system {text!r}")


def read_systems_file(path: str, defaults: SystemConfig) -> list[SystemConfig]:
    """A JSON list of flat system objects (keys as for ``--system``)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ConfigError(f"{path}: expected a JSON list of objects")
    return [system_from_dict(d, defaults, source=f"{path}[{i}]") for i, d in enumerate(data)]


# ---------------------------------------------------------------------------------------------- running
def render_prompts(items: Sequence[PromptItem], template: str) -> list[str]:
    """Each item's prompt text in ``template`` (no special tokens; ``generate`` adds bos)."""
    from tencentpretrain.tokenizers.templates import get_template, render_prompt

    chosen = get_template(template)
    return [render_prompt(chosen, item.instruction, item.input) for item in items]


def run_generator(generator: Generator, prompts: Sequence[str], *, batch_size: int, desc: str = "") -> list[str]:
    """``generator`` over ``prompts`` in chunks of ``batch_size`` (with a progress bar on a terminal)."""
    chunks = [list(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]
    outputs: list[str] = []
    for chunk in progress(chunks, total=len(chunks), desc=desc, unit="batch"):
        answers = generator(chunk)
        if len(answers) != len(chunk):
            raise RuntimeError(f"generator returned {len(answers)} completions for {len(chunk)} prompts")
        outputs.extend(answers)
    return outputs


GeneratorFactory = Callable[[SystemConfig], Any]  # a context manager yielding a Generator


@contextmanager
def model_generator(system: SystemConfig, *, batch_size: int = 8) -> Iterator[Generator]:
    """Load ``system``'s model and tokenizer and yield a Generator built on ``tencentpretrain.generation``;
    the model is released on exit, so systems are loaded one at a time."""
    import torch

    from tencentpretrain.evaluation.common import load_model_and_tokenizer
    from tencentpretrain.generation.engine import GenerationConfig
    from tencentpretrain.generation.generate import generate
    from tencentpretrain.generation.sampling import SamplingParams

    model, tokenizer = load_model_and_tokenizer(system.model)
    loaded = [model]  # dropped on exit so the next system's weights can take the memory
    del model
    sampling = SamplingParams(
        temperature=system.temperature, top_k=system.top_k, top_p=system.top_p,
        repetition_penalty=system.repetition_penalty, seed=system.seed,
    )
    config = GenerationConfig(
        max_new_tokens=system.max_new_tokens, sampling=sampling, stop_strings=system.stop_strings
    )

    def run(prompts: Sequence[str]) -> list[str]:
        with torch.inference_mode():
            return [c.text for c in generate(loaded[0], tokenizer, list(prompts), config, batch_size=batch_size)]

    try:
        yield run
    finally:
        loaded.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def generate_report(
    items: Sequence[PromptItem],
    systems: Sequence[SystemConfig],
    *,
    batch_size: int = 8,
    factory: GeneratorFactory | None = None,
) -> list[dict[str, Any]]:
    """Run every system over ``items``; one record per prompt: id, category, prompt, input, and
    ``outputs`` {system name: completion}. ``factory(system)`` is a context manager that yields the system's
    Generator (default ``model_generator``)."""
    names = [s.name for s in systems]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"system names must be unique; repeated: {', '.join(duplicates)} (set name=...)")
    factory = factory or (lambda system: model_generator(system, batch_size=batch_size))
    outputs: dict[str, list[str]] = {}
    for system in systems:
        logger.info("generating with %s", system.name)
        with factory(system) as generator:
            outputs[system.name] = run_generator(
                generator, render_prompts(items, system.template), batch_size=batch_size, desc=system.name
            )
    return [
        {
            "id": item.id,
            "category": item.category,
            "prompt": item.instruction,
            "input": item.input,
            "reference": item.reference,
            "outputs": {name: outputs[name][i] for name in names},
        }
        for i, item in enumerate(items)
    ]


# ---------------------------------------------------------------------------------------------- Markdown
def markdown_cell(text: str) -> str:
    """Text that stays in one Markdown table cell: pipes escaped, line breaks as <br>."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "\n").replace("\t", " ")
    text = "".join(c if c == "\n" or c.isprintable() else f"\\u{ord(c):04x}" for c in text)  # control chars visible
    return text.strip().replace("\n", "<br>") or " "


def markdown_report(records: Sequence[dict[str, Any]], systems: Sequence[SystemConfig], *, title: str = "") -> str:
    """The side-by-side table, one section per category (in order of first appearance), then the settings."""
    names = [s.name for s in systems]
    with_reference = any(r.get("reference") for r in records)
    columns = (["reference"] if with_reference else []) + [markdown_cell(n) for n in names]
    lines = [f"# {title}", ""] if title else []
    categories = list(dict.fromkeys(r["category"] for r in records))
    for category in categories:
        if category or len(categories) > 1:
            lines += [f"## {category or 'Uncategorized'}", ""]
        lines.append("| # | prompt | " + " | ".join(columns) + " |")
        lines.append("|---|---|" + "---|" * len(columns))
        for r in (r for r in records if r["category"] == category):
            prompt = r["prompt"] + (f"\n{r['input']}" if r["input"] else "")
            cells = [markdown_cell(r["outputs"][n]) for n in names]
            if with_reference:
                cells.insert(0, markdown_cell(r.get("reference", "")))
            lines.append(f"| {markdown_cell(r['id'])} | {markdown_cell(prompt)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Settings", "", "| system | model | template | max_new_tokens | temperature | top_k | top_p | "
              "repetition_penalty | seed |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in systems:
        model = s.model.load_model_path or "(random init)"
        if s.model.lora_path:
            model += f" + LoRA {s.model.lora_path}"
        lines.append(
            f"| {markdown_cell(s.name)} | {markdown_cell(model)} | {s.template} | {s.max_new_tokens} | {s.temperature} "
            f"| {s.top_k} | {s.top_p} | {s.repetition_penalty} | {s.seed} |"
        )
    return "\n".join(lines) + "\n"
