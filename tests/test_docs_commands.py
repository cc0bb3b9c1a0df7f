"""The commands in README.md and docs/*.md run as written.

Convention (how a document says what is run and what is only shown):

* A document that contains the line ``<!-- docs-test: run -->`` is **executed**: its fenced blocks tagged
  ```` ```bash ```` run in order, each as ``bash -euo pipefail``, in one fresh temporary directory per document.
  That directory holds a symlink to every top-level entry of the repository (``data/``, ``models/``, ``scripts/``,
  ``preprocess.py``, ...) except ``runs/``, so repository paths resolve exactly as from the repository root, and
  every output must go under ``runs/`` (git-ignored), which is a real directory there: a command that writes
  anywhere else fails the test. ``python`` and ``python3`` are the interpreter running the tests.
* In an executed document, blocks tagged anything else (```` ```sh ````, ```` ```text ````, ```` ```python ````,
  none) are shown only, and so is a ``bash`` block preceded by ``<!-- not-tested: <why> -->``. A ``bash`` block whose
  first lines are ``# requires: module ...`` is skipped when one of those modules cannot be imported (optional
  extras such as matplotlib or gguf).
* Executed commands run "on tiny settings": the values of the flags in ``TINY_SETTINGS`` are lowered (for instance
  ``--total_steps 300`` becomes 6). ``TP_DOCS_AS_WRITTEN=1`` runs them exactly as written instead.
* In **every** document (executed or not, any code block, indented code and inline code spans), each command
  ``python|python3|deepspeed|torchrun [launcher options] <script>.py [flags]`` that names a repository script is
  checked: the script exists, ``<script> --help`` succeeds, and every ``--flag`` given to it appears in that help
  text. That catches renamed scripts and mistyped flags even in commands that need GPUs or real weights.
  ``KNOWN_PENDING_FLAGS`` lists flags a document announces before the code has them; an entry that the help
  starts listing fails the test, so the list only shrinks.

The parsing tests are fast; running the documents and probing ``--help`` are marked slow.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

ROOT = Path(REPO_ROOT)
RUN_MARKER = "<!-- docs-test: run -->"
NOT_TESTED = re.compile(r"<!--\s*not-tested\b")
LAUNCHERS = {"python", "python3", "deepspeed", "torchrun"}
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "<<", "2>", "2>&1", "&>"}
OUTPUT_FLAGS = ("--output_model_path", "--output_path", "--prediction_path", "--log_path", "--jsonl_path",
                "--report_path")
# flag -> the value executed commands use at most ("tiny settings")
TINY_SETTINGS = {"--total_steps": 6, "--save_checkpoint_steps": 3, "--report_steps": 3, "--max_new_tokens": 8,
                 "--epochs_num": 1}
# (document, script, flag): flags a document announces before the entry point has them
KNOWN_PENDING_FLAGS: set[tuple[str, str, str]] = set()
BLOCK_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block: its info string, text, first line number and whether a not-tested mark precedes it."""

    lang: str
    text: str
    line: int
    not_tested: bool


@dataclasses.dataclass(frozen=True)
class Command:
    """A command that runs a Python script: the script path as written and the flags given to it."""

    script: str
    flags: tuple[str, ...]
    source: str  # "path:line"


def documents() -> list[Path]:
    """README.md and every docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ----------------------------------------------------------------------------------------------- markdown parsing


def fenced_blocks(markdown: str) -> list[Block]:
    """The fenced code blocks of a document, in order."""
    blocks, lines = [], markdown.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match.groups()
        previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j].removeprefix(indent))
            j += 1
        blocks.append(Block(lang.lower(), "\n".join(body), i + 1, bool(NOT_TESTED.search(previous))))
        i = j + 1
    return blocks


def prose_code(markdown: str) -> list[tuple[str, int]]:
    """Code outside fences: indented code lines and inline code spans, with their line numbers."""
    found, in_fence, fence = [], False, ""
    kept = []
    for number, line in enumerate(markdown.splitlines(), 1):
        match = re.match(r"^\s*(`{3,}|~{3,})", line)
        if match and (not in_fence or line.strip().startswith(fence)):
            in_fence, fence = (not in_fence), match.group(1)
            kept.append((number, ""))
            continue
        kept.append((number, "" if in_fence else line))
    for number, line in kept:
        if line.startswith("    ") and line.strip():
            found.append((line.strip(), number))
    text = "\n".join(line for _, line in kept)
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        found.append((match.group(1).replace("\n", " "), text.count("\n", 0, match.start()) + 1))
    return found


def logical_lines(code: str) -> list[str]:
    """Shell lines with backslash continuations joined."""
    return [line for line in re.sub(r"\\\n", " ", code).splitlines() if line.strip()]


def tokenize(line: str) -> list[str]:
    line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
    try:
        return shlex.split(line, posix=True)
    except ValueError:  # unbalanced quotes in a prose example: fall back to whitespace
        return line.split()


def commands_in_line(line: str, source: str) -> list[Command]:
    """Every ``launcher [options] script.py [flags]`` in one shell line."""
    tokens, found = tokenize(line), []
    for start, token in enumerate(tokens):
        if os.path.basename(token) not in LAUNCHERS:
            continue
        script_at = None
        for k in range(start + 1, len(tokens)):
            if tokens[k] in SHELL_OPERATORS or tokens[k] in ("-m", "-c", "-"):
                break
            if tokens[k].endswith(".py") and not tokens[k].startswith("-"):
                script_at = k
                break
        if script_at is None:
            continue
        flags = []
        for token in tokens[script_at + 1:]:
            if token in SHELL_OPERATORS:
                break
            token = token.strip("[]")
            if re.match(r"^--[A-Za-z]", token):
                flags.append(token.split("=", 1)[0])
        found.append(Command(tokens[script_at], tuple(flags), source))
    return found


def commands_in_document(path: Path) -> list[Command]:
    markdown = path.read_text(encoding="utf-8")
    found = []
    for block in fenced_blocks(markdown):
        for line in logical_lines(block.text):
            found.extend(commands_in_line(line, f"{rel(path)}:{block.line}"))
    for code, number in prose_code(markdown):
        found.extend(commands_in_line(code, f"{rel(path)}:{number}"))
    return found


def repo_script(script: str) -> str | None:
    """The repository-relative path of a script a command names, or None for paths outside the repository."""
    if os.path.isabs(script) or any(c in script for c in "<>$*{}"):
        return None
    normalized = os.path.normpath(script)
    first = normalized.split(os.sep)[0]
    if os.sep in normalized and not (ROOT / first).exists():
        return None  # e.g. a user's own directory in an example
    return normalized


def executed_blocks(markdown: str) -> list[Block]:
    return [b for b in fenced_blocks(markdown) if b.lang == "bash" and not b.not_tested]


def required_modules(block: Block) -> list[str]:
    modules = []
    for line in block.text.splitlines():
        match = re.match(r"^#\s*requires:\s*(.+)$", line.strip())
        if not match:
            break
        modules += match.group(1).split()
    return modules


def tiny(code: str) -> str:
    """Lower the values of the TINY_SETTINGS flags in a block."""
    for flag, limit in TINY_SETTINGS.items():
        code = re.sub(rf"({re.escape(flag)}(?:\s+|=))(\d+)",
                      lambda m, limit=limit: f"{m.group(1)}{min(int(m.group(2)), limit)}", code)
    return code


# ------------------------------------------------------------------------------------------------ fast unit tests

SAMPLE = """# Title
<!-- docs-test: run -->

```bash
python3 scripts/merge_lora.py --input_model_path a.bin \\
    --lora_model_path b.bin [--lora_alpha 16] --output_model_path=c.bin  # a comment --not_a_flag
```

<!-- not-tested: needs 8 GPUs -->
```bash
deepspeed --num_gpus 8 pretrain.py --deepspeed --total_steps 300000 | tee log.txt --x
```

```sh
python -m pytest tests/test_x.py -q
printf 'a\\n' | python inference/llama_dialogue.py --seq_length 256
```

Inline: `torchrun --nproc_per_node 2 pretrain.py --world_size 2
--batch_size 4`, and an indented example:

    python3 preprocess.py --corpus_path c.txt --dataset_path=d
"""


def test_fenced_blocks_languages_lines_and_marks():
    blocks = fenced_blocks(SAMPLE)
    assert [(b.lang, b.line, b.not_tested) for b in blocks] == [("bash", 4, False), ("bash", 10, True), ("sh", 14, False)]
    assert [b.line for b in executed_blocks(SAMPLE)] == [4]


def test_commands_flags_launchers_and_prose():
    found = []
    for block in fenced_blocks(SAMPLE):
        for line in logical_lines(block.text):
            found += commands_in_line(line, "x")
    for code, _ in prose_code(SAMPLE):
        found += commands_in_line(code, "x")
    assert [(c.script, c.flags) for c in found] == [
        ("scripts/merge_lora.py", ("--input_model_path", "--lora_model_path", "--lora_alpha", "--output_model_path")),
        ("pretrain.py", ("--deepspeed", "--total_steps")),
        ("inference/llama_dialogue.py", ("--seq_length",)),
        ("preprocess.py", ("--corpus_path", "--dataset_path")),
        ("pretrain.py", ("--world_size", "--batch_size")),
    ]


def test_tiny_settings_and_requires():
    code = "# requires: matplotlib gguf\npython pretrain.py --total_steps 300 --report_steps=2 --batch_size 16"
    assert tiny(code).endswith("--total_steps 6 --report_steps=2 --batch_size 16")
    assert required_modules(Block("bash", code, 1, False)) == ["matplotlib", "gguf"]


def test_repo_script_resolution():
    assert repo_script("scripts/merge_lora.py") == "scripts/merge_lora.py"
    assert repo_script("<out>/zero_to_fp32.py") is None
    assert repo_script("/abs/x.py") is None
    assert repo_script("my_project/x.py") is None
    assert repo_script("typo_at_top_level.py") == "typo_at_top_level.py"


def all_commands() -> list[Command]:
    return [command for path in documents() for command in commands_in_document(path)]


def test_documented_scripts_exist():
    commands = all_commands()
    assert len(commands) > 50, "the docs are expected to hold many commands; the parser is broken"
    missing = sorted({f"{c.source}: {c.script}" for c in commands
                      if repo_script(c.script) and not (ROOT / repo_script(c.script)).is_file()})
    assert not missing, "documented scripts that do not exist:\n" + "\n".join(missing)


def test_quickstart_is_executed_and_writes_only_under_runs():
    markdown = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    assert RUN_MARKER in markdown
    blocks = executed_blocks(markdown)
    assert len(blocks) >= 10
    for block in blocks:
        for line in logical_lines(block.text):
            values = output_paths(line)
            assert all(v.startswith("runs/") for v in values), (line, values)


# --------------------------------------------------------------------------------------------------- help probing

PROBE = r"""
import contextlib, io, json, runpy, sys, logging
results = {}
for script in sys.argv[1:]:
    out = io.StringIO()
    sys.argv = [script, "--help"]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code or 0
    except BaseException as exc:
        code = repr(exc)
    results[script] = {"code": code, "help": out.getvalue()}
print(json.dumps(results))
"""


def probe_help(scripts: list[str]) -> dict[str, dict]:
    """``--help`` of every script, in one interpreter (torch is imported once)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *scripts], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def help_flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[A-Za-z][\w-]*)", text))


@pytest.mark.slow
def test_documented_flags_exist_in_help():
    commands = [c for c in all_commands() if repo_script(c.script) and (ROOT / repo_script(c.script)).is_file()]
    scripts = sorted({repo_script(c.script) for c in commands})
    helps = probe_help(scripts)
    problems, pending_seen = [], set()
    for script in scripts:
        if helps[script]["code"] != 0 or "usage:" not in helps[script]["help"]:
            problems.append(f"{script} --help failed ({helps[script]['code']}): {helps[script]['help'][-500:]}")
    for command in commands:
        script = repo_script(command.script)
        known = help_flags(helps[script]["help"])
        for flag in command.flags:
            key = (command.source.split(":")[0], os.path.basename(script), flag)
            if key in KNOWN_PENDING_FLAGS:
                pending_seen.add(key)
                if flag in known:
                    problems.append(f"{key} is in --help now: remove it from KNOWN_PENDING_FLAGS")
            elif flag not in known:
                problems.append(f"{command.source}: {script} has no flag {flag}")
    stale = KNOWN_PENDING_FLAGS - pending_seen
    problems += [f"{key} no longer appears in the docs: remove it from KNOWN_PENDING_FLAGS" for key in stale]
    assert not problems, "\n".join(sorted(set(problems)))


# ---------------------------------------------------------------------------------------------- executed documents


def output_paths(line: str) -> list[str]:
    """The values of the output flags of one shell line (what a command promises to write)."""
    tokens, values = tokenize(line), []
    for k, token in enumerate(tokens):
        name, _, value = token.partition("=")
        if name in OUTPUT_FLAGS or (name == "--dataset_path" and "preprocess.py" in tokens):
            value = value or (tokens[k + 1] if k + 1 < len(tokens) else "")
            values.append(value)
    return values


def make_workdir(tmp: Path) -> dict[str, str]:
    """Symlink the repository's top-level entries into tmp (runs/ stays real) and put our python first on PATH."""
    for entry in ROOT.iterdir():
        if entry.name not in {".git", ".venv", "runs", ".pytest_cache"}:
            (tmp / entry.name).symlink_to(entry)
    (tmp / "runs").mkdir()
    bin_dir = tmp.parent / f"{tmp.name}-bin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        # A script, not a symlink: a venv's interpreter reached through a symlink elsewhere loses its venv (Python
        # looks for pyvenv.cfg beside the path it was started from), and the project is installed only in the venv.
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
        wrapper.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1",
               MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)
    return env


def executed_documents() -> list[Path]:
    return [p for p in documents() if RUN_MARKER in p.read_text(encoding="utf-8")]


@pytest.mark.slow
@pytest.mark.parametrize("path", executed_documents(), ids=rel)
def test_executed_document_runs(path, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = make_workdir(work)
    as_written = os.environ.get("TP_DOCS_AS_WRITTEN") == "1"
    skipped = []
    for block in executed_blocks(path.read_text(encoding="utf-8")):
        missing = [m for m in required_modules(block) if importlib.util.find_spec(m) is None]
        if missing:
            skipped.append(f"{rel(path)}:{block.line} (needs {' '.join(missing)})")
            continue
        code = block.text if as_written else tiny(block.text)
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env, capture_output=True,
                              text=True, timeout=BLOCK_TIMEOUT_S, check=False)
        assert proc.returncode == 0, (f"{rel(path)}:{block.line} failed ({proc.returncode}):\n{code}\n"
                                      f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}")
        for line in logical_lines(code):
            for value in output_paths(line):
                assert value.startswith("runs/"), f"{rel(path)}:{block.line}: output outside runs/: {value}"
                assert (work / value).exists(), f"{rel(path)}:{block.line}: {value} was not written"
    if path.name == "quickstart.md":
        check_quickstart_results(path, work)
    for entry in skipped:
        print("skipped block:", entry)


def check_quickstart_results(path: Path, work: Path) -> None:
    """Numbers, not only exit codes: the tokenizer has the documented size and the base model learnt."""
    markdown = path.read_text(encoding="utf-8")
    vocab_size = int(re.search(r"build_vocab\.py.*?--vocab_size (\d+)", markdown, re.DOTALL).group(1))
    manifest = json.loads((work / "runs/quickstart/corpus_ds/manifest.json").read_text(encoding="utf-8"))
    assert manifest["tokenizer"]["vocab_size"] == vocab_size
    assert manifest["counts"]["instances"] > 1000
    losses = [float(x) for x in re.findall(r"\| loss\s+([\d.]+)",
                                           (work / "runs/quickstart/pretrain.log").read_text(encoding="utf-8"))]
    assert losses and all(math.isfinite(x) for x in losses)
    assert losses[-1] < math.log(vocab_size), (losses, math.log(vocab_size))
    ppl = json.loads((work / "runs/quickstart/ppl.json").read_text(encoding="utf-8"))
    assert math.isclose(ppl["perplexity"], math.exp(ppl["loss"]), rel_tol=1e-6)
    answers = (work / "runs/quickstart/answers.md").read_text(encoding="utf-8")
    prompts = [json.loads(line)["instruction"] for line in (ROOT / "data/demo_prompts.jsonl").open(encoding="utf-8")]
    assert all(prompt in answers for prompt in prompts)
