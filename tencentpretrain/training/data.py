"""The run's data: the data pipeline's ``BatchLoader`` for this rank, plus the ``--prefix_lm_loss`` view."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tencentpretrain.data.dataset import read_manifest
from tencentpretrain.data.loader import Batch, BatchLoader
from tencentpretrain.errors import ConfigError
from tencentpretrain.training.config import DataOptions, RunConfig
from tencentpretrain.training.parallel import DistEnv


class ResponseOnlyLoader:
    """Scores only positions whose target is a response token (``seg == 2``), as ``--prefix_lm_loss`` did."""

    def __init__(self, loader: BatchLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        batch = next(self.loader)
        return batch._replace(loss_mask=batch.loss_mask & (batch.seg == 2))

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


def build_loader(run: RunConfig, env: DistEnv, path: str, *, shuffle: bool = True) -> BatchLoader | ResponseOnlyLoader:
    """This rank's loader over the dataset at ``path`` (training data, or the eval set with ``shuffle=False``)."""
    loader = BatchLoader(path, run.train.batch_size, seed=run.train.seed, rank=env.rank, world_size=env.world_size,
                         shuffle=shuffle, seq_length=run.data.seq_length, data_processor=run.data.data_processor,
                         model_config=run.model)
    check_masking_flags(run.data, loader.dataset.options, path)
    return ResponseOnlyLoader(loader) if run.data.prefix_lm_loss else loader


def dataset_manifest(path: str) -> dict[str, Any]:
    return read_manifest(path)


MASKING_FLAGS = ("dynamic_masking", "whole_word_masking", "span_masking")


def check_masking_flags(data: DataOptions, options: dict[str, Any], path: str) -> None:
    """The original's pretrain.py masking flags, when given, must match how the dataset at ``path`` masks: here
    masking is decided by preprocess.py and recorded in the manifest, so a flag cannot change it afterwards."""
    missing = [name for name in MASKING_FLAGS if getattr(data, name) and not options.get(name)]
    if missing:
        flags = " ".join(f"--{name}" for name in missing)
        raise ConfigError(f"{flags}: {path} was not built with {'it' if len(missing) == 1 else 'them'}; masking is "
                          f"chosen at preprocessing here: run preprocess.py again with {flags}")
    span = options.get("span_masking") or {}
    for name, key in (("span_geo_prob", "geo_prob"), ("span_max_length", "max_length")):
        value = getattr(data, name)
        if value is not None and span.get(key) != value:
            built = f"{key}={span[key]}" if key in span else "no span masking"
            raise ConfigError(f"--{name} {value}: {path} was built with {built}; masking is chosen at "
                              f"preprocessing here: run preprocess.py again with --span_masking --{name} {value}")
