"""``pretrain.py``'s command line: parse flags (defaults < JSON config < command line), build the RunConfig,
and train in the process mode the environment sets (or spawn ``--gpu_ranks`` workers, as the original did)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tencentpretrain.config import parse_args_with_config
from tencentpretrain.training.config import RunConfig, build_parser, run_config_from_args
from tencentpretrain.training.parallel import launched_by_launcher, shutdown_distributed, spawn_workers


def parse_run_config(argv: Sequence[str] | None = None) -> RunConfig:
    """The RunConfig of a ``pretrain.py`` command line (``argv`` without the program name)."""
    args, _ = parse_args_with_config(build_parser(), argv)
    return run_config_from_args(args)


def run_and_exit(argv: Sequence[str] | None = None) -> None:
    """``pretrain.py`` (under ``tencentpretrain.cli.run``): train, then shut the process group down so every rank
    exits cleanly. After an error nothing waits at a barrier: the harness exits and the launcher stops the rest."""
    main(argv)
    shutdown_distributed()


def main(argv: Sequence[str] | None = None):
    """Train; returns the TrainResult (None in the parent of spawned workers). The process group stays up, so
    the result's engine can still be used (evaluation, tests); ``run_and_exit`` is the command-line entry."""
    argv = list(sys.argv[1:] if argv is None else argv)
    run = parse_run_config(argv)
    if run.dist.gpu_ranks and run.dist.world_size > 1 and not launched_by_launcher():
        spawn_workers(run.dist, run_and_exit, argv)
        return None
    from tencentpretrain.training.trainer import train

    return train(run)
