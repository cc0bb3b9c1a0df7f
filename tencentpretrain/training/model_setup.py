"""Building the model of a run: vocabulary size, from-scratch init or strict pretrained load, LoRA.

Under ZeRO-3 the model is built partitioned (``deepspeed.zero.Init``), initialised module by module and loaded
tensor by tensor, so no rank ever holds a full copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from tencentpretrain.checkpoint import check_state_dict, load_file
from tencentpretrain.convert.loading import load_pretrained
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.models.model import DEEP_INIT_SUFFIXES, INIT_STD, Model, build_model, init_module_
from tencentpretrain.training.config import DataOptions, RunConfig
from tencentpretrain.training.deepspeed_glue import init_weights_zero3, load_pretrained_zero3, zero3_init
from tencentpretrain.training.parallel import DistEnv
from tencentpretrain.transforms.lora import apply_lora

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Vocabulary:
    """What a run knows about its vocabulary: the size and, when known, the tokenizer file hashes."""

    size: int
    tokenizer_files: tuple[str, ...] = ()  # sha256 of the files defining the tokenizer
    source: str = ""
    tgt_size: int | None = None  # the decoder side's own vocabulary (mt data with a target tokenizer)


def resolve_vocabulary(run: RunConfig, manifest: dict[str, Any] | None) -> Vocabulary:
    """The vocabulary from the tokenizer flags, else the dataset manifest, else the config's ``vocab_size``.

    A tokenizer given on the command line must be the one the dataset was built with.
    """
    from_tokenizer = _tokenizer_vocabulary(run.data)
    from_manifest = _manifest_vocabulary(manifest, run.data.dataset_path)
    if from_tokenizer and from_manifest and from_tokenizer.tokenizer_files != from_manifest.tokenizer_files:
        raise ConfigError(
            f"the tokenizer ({from_tokenizer.source}, {from_tokenizer.size} pieces) is not the one "
            f"{run.data.dataset_path} was built with ({from_manifest.size} pieces); pass the tokenizer used by "
            "preprocess.py or build the dataset again"
        )
    vocab = from_tokenizer or from_manifest
    if vocab is not None and from_manifest is not None:
        _check_target_tokenizer(run.data, manifest)
        vocab = replace(vocab, tgt_size=from_manifest.tgt_size)
    if vocab is None and run.model.vocab_size is not None:
        vocab = Vocabulary(run.model.vocab_size, (), "config vocab_size")
    if vocab is None:
        raise ConfigError("the vocabulary size is unknown: pass --spm_model_path (or --vocab_path), "
                          "or set vocab_size in the config")
    return vocab


def _check_target_tokenizer(data: DataOptions, manifest: dict[str, Any]) -> None:
    """The original's ``--tgt_*`` flags, when they name a file, must name the tokenizer of the dataset's targets."""
    from tencentpretrain.data.processors.mt import target_tokenizer_config
    from tencentpretrain.tokenizers import build_tokenizer

    config = target_tokenizer_config(data)
    if config is None:
        return
    given = build_tokenizer(config).describe()
    built = (manifest.get("options") or {}).get("tgt_tokenizer") or manifest["tokenizer"]
    if [f["sha256"] for f in given["files"]] != [f["sha256"] for f in built["files"]]:
        raise ConfigError(
            f"the target tokenizer ({given['files'][0]['path'] if given['files'] else config.name}, "
            f"{given['vocab_size']} pieces) is not the one {data.dataset_path} was built with "
            f"({built['vocab_size']} pieces); pass the --tgt_* files given to preprocess.py, or none"
        )


def _tokenizer_vocabulary(data: DataOptions) -> Vocabulary | None:
    if not (data.spm_model_path or data.vocab_path):
        return None
    from tencentpretrain.tokenizers import TokenizerConfig, build_tokenizer

    tokenizer = build_tokenizer(TokenizerConfig(tokenizer=data.tokenizer, spm_model_path=data.spm_model_path,
                                                vocab_path=data.vocab_path, merges_path=data.merges_path,
                                                do_lower_case=data.do_lower_case == "true"))
    description = tokenizer.describe()
    return Vocabulary(tokenizer.vocab_size, tuple(f["sha256"] for f in description["files"]),
                      data.spm_model_path or data.vocab_path or "")


def _manifest_vocabulary(manifest: dict[str, Any] | None, path: str) -> Vocabulary | None:
    if not manifest:
        return None
    tokenizer = manifest.get("tokenizer", {})
    if tokenizer.get("vocab_size") is None:
        return None
    files = tuple(f["sha256"] for f in tokenizer.get("files", []))
    target = (manifest.get("options") or {}).get("tgt_tokenizer")  # mt: the target side's tokenizer
    tgt_size = int(target["vocab_size"]) if target else None
    return Vocabulary(int(tokenizer["vocab_size"]), files, f"{path}/manifest.json", tgt_size)


def build_run_model(run: RunConfig, vocab_size: int, env: DistEnv, ds_config: dict[str, Any] | None,
                    tgt_vocab_size: int | None = None) -> Model:
    """The model of the run on the CPU (ZeRO-3: partitioned), initialised or loaded, with LoRA applied;
    ``tgt_vocab_size``: the decoder side's own vocabulary, if any."""
    torch.manual_seed(run.train.seed)  # the same initial weights on every rank
    deep_layers = run.model.layers_num if run.train.deep_init else None
    path = run.train.pretrained_model_path
    if run.deepspeed.enable_zero3:
        model = _build_zero3(run, vocab_size, env, ds_config, deep_layers, tgt_vocab_size)
    elif path:
        with torch.device("meta"):
            model = build_model(run.model, vocab_size, init=False, tgt_vocab_size=tgt_vocab_size)
        load_pretrained(model, path)
        logger.info("loaded %s", path)
    else:
        model = build_model(run.model, vocab_size, init=True, tgt_vocab_size=tgt_vocab_size)
        if deep_layers:
            for name, module in model.named_modules():
                if name.endswith(DEEP_INIT_SUFFIXES):
                    init_module_(name, module, deep_init_layers=deep_layers)
    if run.lora.use_lora:
        _add_lora(model, run)
    return model


def _build_zero3(run: RunConfig, vocab_size: int, env: DistEnv, ds_config: dict[str, Any] | None,
                 deep_layers: int | None, tgt_vocab_size: int | None = None) -> Model:
    if ds_config is None:
        raise ConfigError("--enable_zero3 needs --deepspeed")
    with zero3_init(ds_config):
        model = build_model(run.model, vocab_size, init=False, tgt_vocab_size=tgt_vocab_size)
    if run.train.pretrained_model_path:
        load_pretrained_zero3(model, run.train.pretrained_model_path, env)
    else:
        init_weights_zero3(model, env, std=INIT_STD, deep_init_layers=deep_layers)
    return model


def _add_lora(model: Model, run: RunConfig) -> None:
    if not run.train.pretrained_model_path:
        logger.warning("--use_lora without --pretrained_model_path: the frozen base weights are random")
    names = apply_lora(model, run.lora.lora_config())
    logger.info("LoRA (r=%d, alpha=%g) on %d layers: %s ...", run.lora.lora_r, run.lora.lora_alpha, len(names),
                ", ".join(names[:2]))
    if run.lora.lora_pretrained_model_path:
        load_lora_weights(model, run.lora.lora_pretrained_model_path)


@torch.no_grad()
def load_lora_weights(model: nn.Module, path: str) -> None:
    """Copy a LoRA-only file into the model's LoRA parameters; every LoRA key must be there, nothing else."""
    state = load_file(path)
    expected = {k: p.shape for k, p in model.named_parameters() if "lora_" in k}
    if not expected:
        raise CheckpointError(f"{path}: the model has no LoRA layers to load into")
    check_state_dict(expected, state, source=path)
    params = dict(model.named_parameters())
    for key, value in state.items():
        params[key].copy_(value.to(params[key].dtype))
    logger.info("loaded LoRA weights from %s", path)

