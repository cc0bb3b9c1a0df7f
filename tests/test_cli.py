"""The command-line harness (tencentpretrain/cli.py): the dataclass->flags generator, run(main)'s exit statuses and
logging, and what pretrain.py makes of them (one-line errors, flag errors blamed on flags, registered choices)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from tencentpretrain.cli import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    LOG_LEVEL_ENV,
    add_dataclass_flags,
    configure_logging,
    dataclass_from_args,
    flag,
    run,
)
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.registry import ACTIVATIONS, EMBEDDINGS, ENCODERS, FEEDFORWARDS, LAYERNORMS, TARGETS
from tencentpretrain.training.cli import parse_run_config
from tencentpretrain.training.config import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(ROOT, "models", "llama", "tiny_config.json")


@dataclass(frozen=True, kw_only=True)
class _Options:
    path: str = field(metadata=flag("where to read"))
    width: int = 8  # columns per row
    scale: float | None = None
    names: tuple[str, ...] = ("a",)
    encoder: str = field(default="transformer", metadata=flag(choices=ENCODERS))
    mode: str = field(default="x", metadata=flag("how", choices=("x", "y")))
    fast: bool = False  # skip checks
    exact: bool = True
    loud: bool = field(default=False, metadata=flag("shout", negatable=True))
    extra: dict | None = None


def _parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t")
    add_dataclass_flags(parser, _Options, **kwargs)
    return parser


def test_flags_are_typed_defaulted_and_documented_from_the_dataclass():
    parser = _parser()
    args = parser.parse_args(["--path", "p", "--width=3", "--scale", "0.5", "--names", "b", "c", "--fast",
                              "--no-exact", "--extra", '{"k": 1}'])
    options = dataclass_from_args(_Options, args)
    assert options == _Options(path="p", width=3, scale=0.5, names=("b", "c"), fast=True, exact=False,
                               extra={"k": 1})
    defaults = dataclass_from_args(_Options, parser.parse_args(["--path", "p"]))
    assert defaults == _Options(path="p")
    flags = {s for a in parser._actions for s in a.option_strings}
    assert "--no-fast" not in flags and "--no-exact" in flags and "--no-loud" in flags  # default True / asked
    assert "--no-fast" in {s for a in _parser(negatable_bools=True)._actions for s in a.option_strings}
    text = parser.format_help()
    assert "columns per row" in text and "skip checks" in text and "where to read" in text  # comment, metadata
    assert f"{{{','.join(ENCODERS.names())}}}" in text  # the registry's names


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: --path"),
    (["--path", "p", "--mode", "z"], "argument --mode: invalid choice: 'z'"),
    (["--path", "p", "--encoder", "transformr"], "argument --encoder: invalid choice: 'transformr'"),
    (["--path", "p", "--width", "wide"], "argument --width: invalid int value: 'wide'"),
    (["--path", "p", "--extra", "[1]"], "argument --extra: expected a JSON object"),
])
def test_bad_flags_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _exit_status(main, capsys, **kwargs) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        run(main, **kwargs)
    return exit_info.value.code, capsys.readouterr().err


def test_run_turns_outcomes_into_exit_statuses(capsys, restore_logging, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tool.py"])

    def user_error():
        raise CheckpointError("model.bin: missing key 'x'\n(check the config)")

    def interrupted():
        raise KeyboardInterrupt

    assert _exit_status(lambda: None, capsys) == (0, "")
    assert _exit_status(lambda: 3, capsys) == (3, "")
    assert _exit_status(lambda: {"ppl": 1.0}, capsys) == (0, "")  # a main's result is not a status
    assert _exit_status(user_error, capsys) == (
        EXIT_USER_ERROR, "tool.py: error: model.bin: missing key 'x' (check the config)\n")
    assert _exit_status(interrupted, capsys) == (EXIT_INTERRUPTED, "tool.py: interrupted\n")

    def bug():
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):  # not swallowed: the traceback is what a bug report needs
        run(bug)


def test_logging_is_configured_once_at_the_requested_level(capsys, restore_logging, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tool.py"])
    monkeypatch.delenv(LOG_LEVEL_ENV, raising=False)

    def main():
        logging.getLogger("tencentpretrain.x").debug("hidden detail")
        logging.getLogger("tencentpretrain.x").info("progress")

    assert _exit_status(main, capsys)[0] == 0
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_tencentpretrain", False)]
    assert len(ours) == 1
    configure_logging()  # again: replaces, never stacks a second handler
    assert len([h for h in logging.getLogger().handlers if getattr(h, "_tencentpretrain", False)]) == 1
    err = _exit_status(main, capsys)[1]
    assert "INFO tencentpretrain.x: progress" in err and "hidden detail" not in err
    assert "progress" not in _exit_status(main, capsys, log_level="WARNING")[1]
    monkeypatch.setenv(LOG_LEVEL_ENV, "debug")  # the environment wins over an entry point's default
    assert "hidden detail" in _exit_status(main, capsys, log_level="WARNING")[1]
    monkeypatch.setenv(LOG_LEVEL_ENV, "chatty")
    status, err = _exit_status(main, capsys)
    assert status == EXIT_USER_ERROR and "log level 'chatty'" in err


# ---------------------------------------------------------------------- pretrain.py
def test_pretrain_help_lists_the_registered_components():
    text = build_parser().format_help()
    for flag_name, registry in (("embedding", EMBEDDINGS), ("encoder", ENCODERS), ("target", TARGETS),
                                ("feed_forward", FEEDFORWARDS), ("hidden_act", ACTIVATIONS),
                                ("layernorm", LAYERNORMS)):
        names = registry.names()
        assert len(names) >= 2 or flag_name == "encoder"
        assert f"--{flag_name} {{{','.join(names)}}}" in text, flag_name


def test_a_bad_model_flag_is_blamed_on_the_flag_not_the_json(tmp_path):
    with pytest.raises(ConfigError) as error:
        parse_run_config(["--output_model_path", "x", "--config_path", TINY_CONFIG, "--heads_num", "7"])
    message = str(error.value)
    assert message.startswith(f"command-line flags (overriding {TINY_CONFIG}): ")
    assert "heads_num=7" in message
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps({**json.load(open(TINY_CONFIG)), "heads_num": 7}))
    with pytest.raises(ConfigError, match=f"^{bad_json}: .*heads_num=7"):  # the file alone is invalid
        parse_run_config(["--output_model_path", "x", "--config_path", str(bad_json)])
    # a flag may repair what the file got wrong
    fixed = parse_run_config(["--output_model_path", "x", "--config_path", str(bad_json), "--heads_num", "8"])
    assert fixed.model.heads_num == 8
    with pytest.raises(ConfigError, match="^command-line flags: .*heads_num=7"):  # no JSON at all
        parse_run_config(["--output_model_path", "x", "--heads_num", "7", "--hidden_size", "64"])


def test_a_misspelt_component_flag_is_a_flag_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_run_config(["--output_model_path", "x", "--config_path", TINY_CONFIG, "--feed_forward", "gatd"])
    assert exit_info.value.code == 2
    assert "argument --feed_forward: invalid choice: 'gatd' (choose from 'dense', 'gated')" in capsys.readouterr().err


@pytest.mark.slow
def test_pretrain_reports_a_config_error_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "pretrain.py"), "--output_model_path", str(tmp_path / "out.bin"),
         "--config_path", TINY_CONFIG, "--heads_num", "7"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pretrain.py: error: command-line flags (overriding "), lines
    assert "Traceback" not in proc.stderr and not os.listdir(tmp_path)


# ---------------------------------------------------------------------- every entry point uses the harness
def _python_files(*folders: str) -> list[str]:
    files = []
    for folder in folders:
        for base, dirs, names in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            files += [os.path.join(base, n) for n in names if n.endswith(".py")]
    return sorted(files)


def test_logging_is_configured_only_by_the_harness():
    files = _python_files("tencentpretrain", "scripts", "inference", "finetune", "benchmarks")
    files += [os.path.join(ROOT, "preprocess.py"), os.path.join(ROOT, "pretrain.py")]
    offenders = [os.path.relpath(p, ROOT) for p in files if "logging.basicConfig(" in open(p, encoding="utf-8").read()]
    assert offenders == [], "use tencentpretrain.cli.run / configure_logging"


def test_every_entry_point_ends_with_run():
    from tests.test_cli_flags import entry_points

    for entry_point in entry_points():
        path = os.path.join(ROOT, entry_point if entry_point.endswith(".py") else
                            entry_point.replace(".", os.sep) + ".py")
        tail = open(path, encoding="utf-8").read().rsplit('if __name__ == "__main__":', 1)[-1]
        assert tail.strip().startswith(("run(", "cli.run(")), f"{entry_point}: end with run(main)"
