"""The command-line harness every entry point shares: dataclass fields -> argparse flags, and ``run(main)``.

Flags come from typed dataclasses (``ModelConfig``, ``DataConfig``, the training sections): one field is one
``--field`` flag whose type, default, choices and help come from the field itself::

    @dataclass(frozen=True, kw_only=True)
    class Options:
        encoder: str = field(default="transformer", metadata=flag(choices=ENCODERS))  # registered encoders
        seq_length: int = field(default=128, metadata=flag("tokens per sequence"))

    add_dataclass_flags(parser, Options)        # --encoder {transformer,...}  --seq_length SEQ_LENGTH

An entry point is a ``main(argv=None)`` that parses its flags and raises on bad input; the script ends with
``run(main)``, which configures logging once and turns the outcome into an exit status:

    0    success
    2    a TencentPretrainError (bad flag value, config, checkpoint, data): one line ``<prog>: error: ...`` on
         stderr, no traceback. 2 is argparse's status for a bad command line, so all user errors share it.
    130  KeyboardInterrupt (Ctrl-C), as a shell reports SIGINT
    any other exception keeps its traceback (status 1): it is a bug, and the traceback is what a report needs.

The console log level is INFO unless the environment sets ``TENCENTPRETRAIN_LOG_LEVEL`` (DEBUG, WARNING, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import logging
import os
import re
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from tencentpretrain.errors import ConfigError, TencentPretrainError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
LOG_LEVEL_ENV = "TENCENTPRETRAIN_LOG_LEVEL"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")

Choices = Any  # a sequence of names, a function returning them, or a Registry (its ``.names()``)


# ---------------------------------------------------------------------- dataclass -> flags
def flag(help: str | None = None, *, choices: Choices | None = None, negatable: bool | None = None,
         parse: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Field metadata for ``add_dataclass_flags``.

    Args:
        help: the flag's help (default: the field's trailing ``# comment`` in the class source, else its name).
        choices: allowed values: a tuple, a function returning them, or a Registry (its registered names).
        negatable: for a bool, also add ``--no-<field>`` (default: only when the field defaults to True).
        parse: converts the flag's text (default: from the annotation; ``dict`` fields take a JSON object).
    """
    return {"help": help, "choices": choices, "negatable": negatable, "parse": parse}


def add_dataclass_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                        title: str | None = None, negatable_bools: bool = False,
                        required: Sequence[str] = ()) -> None:
    """Add one ``--<field>`` flag per field of dataclass ``cls``.

    Type from the annotation (``int | None`` -> int; ``tuple[str, ...]`` -> ``nargs="+"``; ``dict`` -> JSON);
    default from the field (a field without one is a required flag); choices and help from ``flag()`` metadata.
    A bool is a switch (``store_true``), or ``--x/--no-x`` when it defaults to True, when its metadata says
    ``negatable=True``, or when ``negatable_bools`` is set (for values a JSON config may already have set).
    ``title`` puts the flags in their own ``--help`` group.
    """
    target = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta.get("help") or comments.get(f.name)
                                  or f.name.replace("_", " ")}
        if f.default is dataclasses.MISSING or f.name in required:
            kwargs["required"] = True
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        kind, is_tuple = _element_type(hints[f.name])
        if kind is bool:
            negatable = meta.get("negatable")
            if negatable is None:
                negatable = negatable_bools or f.default is True
            target.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction if negatable else "store_true",
                                **kwargs)
            continue
        choices = meta.get("choices")
        if choices is not None:
            kwargs["choices"] = resolve_choices(choices)
        if is_tuple:
            kwargs["nargs"] = "+"
        kwargs["type"] = meta.get("parse") or (json_object if kind is dict else kind)
        target.add_argument(f"--{f.name}", **kwargs)


def resolve_choices(choices: Choices) -> list[str]:
    """The allowed values of ``flag(choices=...)``: a Registry's names, a function's result, or the sequence."""
    if hasattr(choices, "names"):
        return list(choices.names())
    return list(choices() if callable(choices) else choices)


def dataclass_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build dataclass ``cls`` from the namespace attributes named like its fields (lists become tuples)."""
    values = {}
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def _element_type(hint: Any) -> tuple[type, bool]:
    """(element type, is a tuple) of an annotation such as ``int | None`` or ``tuple[str, ...]``."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is tuple:
        return args[0], True
    if origin is dict:
        return dict, False
    if args:  # an Optional / union: its first non-None member
        return _element_type(args[0])
    return hint, False


_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """``{field: trailing comment}`` of the one-line field definitions in ``cls``'s source.

    ``hidden_size: int = 768  # transformer width`` gives ``--hidden_size`` the help "transformer width", so a
    config documented with comments needs no second copy of its documentation for ``--help``.
    """
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (frozen app, interactive): names only
        return {}
    comments = {}
    for line in source.splitlines():
        match = _FIELD_COMMENT.match(line)
        if match and not line.lstrip().startswith("#"):
            comments.setdefault(match.group(1), match.group(2))
    return comments


def json_object(text: str) -> dict[str, Any]:
    """argparse type of a flag that takes a JSON object (``--rope_scaling '{"type": "linear", "factor": 2}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


# ---------------------------------------------------------------------- logging and run(main)
def configure_logging(level: str | int | None = None, *, fmt: str = LOG_FORMAT) -> None:
    """One console handler on the root logger at ``level`` (default: $TENCENTPRETRAIN_LOG_LEVEL, else INFO).

    Calling it again replaces the handler it installed (handlers this package installs carry
    ``_tencentpretrain = True``; the training loop's ``setup_logging`` replaces them the same way).
    """
    if level is None:
        level = os.environ.get(LOG_LEVEL_ENV, "INFO")
    if isinstance(level, str):
        if level.upper() not in LOG_LEVELS:
            raise ConfigError(f"log level {level!r} (from ${LOG_LEVEL_ENV} or a flag): choose from "
                              f"{', '.join(LOG_LEVELS)}")
        level = level.upper()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tencentpretrain", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    handler._tencentpretrain = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def run(main: Callable[[], Any], *, log_level: str | None = None, log_format: str = LOG_FORMAT) -> NoReturn:
    """Run an entry point's ``main()`` (which reads ``sys.argv``) and exit with the status of the module doc.

    ``log_level`` is the entry point's default console level (an interactive chat keeps WARNING);
    $TENCENTPRETRAIN_LOG_LEVEL overrides it.
    """
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "tencentpretrain"
    try:
        configure_logging(os.environ.get(LOG_LEVEL_ENV) or log_level, fmt=log_format)
        result = main()
    except TencentPretrainError as e:
        message = str(e).strip().replace("\n", " ") or type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)
