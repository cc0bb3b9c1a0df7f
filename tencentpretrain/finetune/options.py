"""The flags of the fine-tuning and task-inference scripts: the original's ``finetune_opts``, ``infer_opts``,
``tokenizer_opts`` and ``adv_opts``, under their names and defaults, plus the model flags of the JSON config."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tencentpretrain.cli import add_dataclass_flags, dataclass_from_args, flag
from tencentpretrain.config import ModelConfig, add_model_args, model_config_from_args, parse_args_with_config
from tencentpretrain.errors import ConfigError
from tencentpretrain.tokenizers import Tokenizer, add_tokenizer_args, build_tokenizer, tokenizer_config_from_args
from tencentpretrain.training.config import OptimConfig


@dataclass(frozen=True, kw_only=True)
class FinetuneOptions:
    """Paths and the epoch loop of a fine-tuning run (the original's ``finetune_opts`` and ``training_opts``)."""

    pretrained_model_path: str | None = field(default=None, metadata=flag(
        "initial weights of the encoder (a TencentPretrain .bin/.safetensors/sharded directory, or an HF "
        "directory of a registered family); its pretraining heads are not used"))
    output_model_path: str = field(default="models/finetuned_model.bin", metadata=flag(
        "where the best model on --dev_path is saved (atomically, with a .sha256 beside it)"))
    train_path: str = field(metadata=flag("training set"))
    dev_path: str = field(metadata=flag("development set: evaluated after every epoch; the best epoch is kept"))
    test_path: str | None = field(default=None, metadata=flag("test set, evaluated with the best model at the end"))
    config_path: str = field(default="models/bert/base_config.json", metadata=flag("model config (JSON)"))
    batch_size: int = field(default=32, metadata=flag("examples per step"))
    seq_length: int = field(default=128, metadata=flag(
        "longest input in tokens (longer inputs are truncated); batches are padded to their longest input only"))
    epochs_num: int = field(default=3, metadata=flag("passes over the training set"))
    report_steps: int = field(default=100, metadata=flag("log the mean training loss every this many steps"))
    seed: int = field(default=7, metadata=flag("random seed (initialisation, shuffling, dropout)"))
    original_dropout: bool = field(default=False, metadata=flag(
        "draw dropout masks as the original did: torch's dropout over batches padded to --seq_length, so that "
        "the same data, seed and initial weights give the original's numbers (slower; by default masks are "
        "drawn more cheaply, batches are padded to their longest input and the encoder skips the padding)"))
    log_path: str | None = field(default=None, metadata=flag("also write the log to this file"))

    def __post_init__(self) -> None:
        for name in ("batch_size", "seq_length", "epochs_num", "report_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class FinetuneOptimConfig(OptimConfig):
    """The optimizer as the original fine-tuned: AdamW without bias correction, weight decay 0.01 (not on biases
    and norm gains), linear warm-up over 10% then linear decay, no gradient clipping."""

    bias_correction: bool = field(default=False, metadata=flag(
        "Adam bias correction (the original fine-tuned without it; --bias_correction turns it on)"))
    max_grad_norm: float = field(default=0.0, metadata=flag(
        "clip the global gradient norm to this value; 0 (the original's behaviour) disables clipping"))


@dataclass(frozen=True, kw_only=True)
class AdversarialOptions:
    """Adversarial training on the word embeddings (the original's ``adv_opts``)."""

    use_adv: bool = field(default=False, metadata=flag("adversarial training (see --adv_type)"))
    adv_type: str = field(default="fgm", metadata=flag("FGM (one attack) or PGD (--pgd_k attacks)",
                                                        choices=("fgm", "pgd")))
    fgm_epsilon: float = field(default=1e-6, metadata=flag("FGM: size of the perturbation"))
    pgd_k: int = field(default=3, metadata=flag("PGD: attacks per step"))
    pgd_epsilon: float = field(default=1.0, metadata=flag("PGD: radius of the perturbation"))
    pgd_alpha: float = field(default=0.3, metadata=flag("PGD: size of each attack"))


@dataclass(frozen=True, kw_only=True)
class InferOptions:
    """Paths and batching of a task-inference script (the original's ``infer_opts``)."""

    load_model_path: str = field(metadata=flag("the fine-tuned model"))
    test_path: str = field(metadata=flag("examples to predict (the task's training format; labels optional)"))
    prediction_path: str = field(metadata=flag("where predictions are written (atomically)"))
    config_path: str = field(metadata=flag("model config (JSON)"))
    batch_size: int = field(default=64, metadata=flag("examples per forward pass"))
    seq_length: int = field(default=128, metadata=flag("longest input in tokens (longer inputs are truncated)"))


AddFlags = Callable[[argparse.ArgumentParser], None]


def finetune_parser(description: str | None, add_task_flags: AddFlags | None = None, *,
                    adversarial: bool = True) -> argparse.ArgumentParser:
    """The parser of a ``finetune/run_*.py`` script; ``add_task_flags`` adds the task's own flags."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(parser, FinetuneOptions, title="fine-tuning")
    add_dataclass_flags(parser, FinetuneOptimConfig, title="optimization")
    if adversarial:
        add_dataclass_flags(parser, AdversarialOptions, title="adversarial training")
    add_tokenizer_args(parser)
    add_model_args(parser)
    if add_task_flags is not None:
        add_task_flags(parser)
    return parser


def infer_parser(description: str | None, add_task_flags: AddFlags | None = None) -> argparse.ArgumentParser:
    """The parser of an ``inference/run_*_infer.py`` script."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(parser, InferOptions, title="inference")
    add_tokenizer_args(parser)
    add_model_args(parser)
    if add_task_flags is not None:
        add_task_flags(parser)
    return parser


@dataclass
class ParsedRun:
    """A parsed command line: the namespace (task flags are read from it), the model config and the tokenizer."""

    args: argparse.Namespace
    model_config: ModelConfig
    tokenizer: Tokenizer

    def options(self, cls: type):
        """One of the option dataclasses above (or a task's own), filled from the flags."""
        return dataclass_from_args(cls, self.args)


def parse_run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
              config_overrides: Callable[[argparse.Namespace], dict] | None = None) -> ParsedRun:
    """Parse ``argv`` (defaults < JSON at --config_path < flags), then build the model config (with the values
    ``config_overrides(args)`` returns, e.g. a ``labels_num`` counted in the training set) and the tokenizer."""
    args, _ = parse_args_with_config(parser, argv)
    for key, value in (config_overrides(args) if config_overrides else {}).items():
        setattr(args, key, value)
    tokenizer = build_tokenizer(tokenizer_config_from_args(args))
    return ParsedRun(args, model_config_from_args(args), tokenizer)


def required_labels_num(labels_num: int | None) -> int:
    """``--labels_num`` of an inference script: the model's number of labels cannot be read off the test file."""
    if not labels_num:
        raise ConfigError("--labels_num is required: the number of labels the model was fine-tuned with")
    return labels_num
