"""Typed configuration of a training run and the ``pretrain.py`` flags generated from it.

Each frozen dataclass groups one concern (optimisation, the loop, data, processes, DeepSpeed, LoRA, logging);
a field's metadata carries its flag help, so help text and default have one source. Flag names are the original
TencentPretrain ones (``--total_steps``, ``--accumulation_steps``, ``--deepspeed_config``, ``--lora_r`` ...) plus
the options modern trainers have (``--precision``, ``--max_grad_norm``, ``--resume_from_checkpoint`` ...).
The argparse Namespace is turned into a ``RunConfig`` right after parsing and goes no further.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from tencentpretrain.cli import LOG_LEVELS, add_dataclass_flags, dataclass_from_args, flag
from tencentpretrain.config import ModelConfig, add_model_args, model_config_from_args
from tencentpretrain.errors import ConfigError
from tencentpretrain.registry import OPTIMIZERS, SCHEDULERS, TOKENIZERS
from tencentpretrain.transforms.lora import DEFAULT_TARGET_MODULES, LoraConfig

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """Optimizer, learning-rate schedule and gradient clipping."""

    optimizer: str = field(default="adamw", metadata=flag("optimizer", choices=OPTIMIZERS))
    learning_rate: float = field(default=2e-5, metadata=flag("peak learning rate"))
    weight_decay: float = field(default=0.01, metadata=flag(
        "decoupled weight decay; biases, norm gains and LoRA weights are never decayed"))
    adam_beta1: float = field(default=0.9, metadata=flag("Adam beta1"))
    adam_beta2: float = field(default=0.999, metadata=flag("Adam beta2"))
    adam_epsilon: float = field(default=1e-6, metadata=flag("Adam epsilon (the original's 1e-6)"))
    bias_correction: bool = field(default=True, metadata=flag(
        "Adam bias correction; --no-bias_correction reproduces the original TencentPretrain AdamW"))
    max_grad_norm: float = field(default=1.0, metadata=flag(
        "clip the global gradient norm to this value; 0 disables clipping (the norm is still reported)"))
    scheduler: str = field(default="linear", metadata=flag("learning-rate schedule", choices=SCHEDULERS))
    warmup: float = field(default=0.1, metadata=flag("warm-up length as a fraction of --total_steps"))
    decay: float = field(default=0.5, metadata=flag("tri_stage: decay length as a fraction of --total_steps"))

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ConfigError(f"--learning_rate must be positive, got {self.learning_rate}")
        for name in ("warmup", "decay"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"--{name} is a fraction of --total_steps in [0, 1], got {getattr(self, name)}")
        if self.max_grad_norm < 0:
            raise ConfigError(f"--max_grad_norm must be >= 0 (0 = no clipping), got {self.max_grad_norm}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The loop: how long, how big, what to save, where to resume from."""

    output_model_path: str = field(metadata=flag(
        "checkpoints are <path>-<step> every --save_checkpoint_steps, and <path> at the end"))
    pretrained_model_path: str | None = field(default=None, metadata=flag(
        "initial weights: a TencentPretrain .bin, a .safetensors file, a sharded directory or an HF LLaMA "
        "directory whose config.json matches --config_path (strict)"))
    resume_from_checkpoint: str | None = field(default=None, metadata=flag(
        "continue a run exactly: a checkpoint <path>-<step>, or 'auto' for the latest complete checkpoint of "
        "--output_model_path (a fresh start when there is none)"))
    total_steps: int = field(default=100000, metadata=flag(
        "optimizer steps (each of --accumulation_steps micro-batches)"))
    save_checkpoint_steps: int = field(default=10000, metadata=flag("save a checkpoint every this many steps"))
    report_steps: int = field(default=100, metadata=flag("log a report line every this many steps"))
    accumulation_steps: int = field(default=1, metadata=flag("micro-batches per optimizer step"))
    batch_size: int = field(default=32, metadata=flag("micro-batch size per process"))
    seed: int = field(default=7, metadata=flag("random seed (initialisation, data order, dropout)"))
    precision: str | None = field(default=None, metadata=flag(
        "fp32, or bf16/fp16 mixed precision (fp32 master weights); default: bf16 on a GPU that has it, fp32 on the "
        "CPU; under DeepSpeed from its config",
        choices=PRECISIONS))
    gradient_checkpointing: bool = field(default=False, metadata=flag(
        "recompute layer activations in the backward pass to save memory (without DeepSpeed too)"))
    deep_init: bool = field(default=False, metadata=flag(
        "from scratch: scale the output projections' init std by 1/sqrt(2 * layers_num)"))
    eval_dataset_path: str | None = field(default=None, metadata=flag(
        "a dataset (preprocess.py output) to report loss and perplexity on"))
    eval_steps: int | None = field(default=None, metadata=flag(
        "evaluate every this many steps (default: --save_checkpoint_steps) and at the end"))
    eval_batches: int = field(default=0, metadata=flag("batches per evaluation; 0 = one pass over the eval set"))
    train_only: str | None = field(default=None, metadata=flag(
        "after a vocabulary extension: train only the embedding and output tables ('embeddings') or only their "
        "new rows ('new_rows'); everything else is frozen", choices=("embeddings", "new_rows")))
    original_vocab_size: int | None = field(default=None, metadata=flag(
        "rows of the base vocabulary for --train_only (default: read <pretrained_model_path>.vocab_extension.json)"))
    skip_nonfinite_steps: int = field(default=0, metadata=flag(
        "a step whose loss or gradient norm is NaN/infinite: 0 (default) stops the run with an error and saves "
        "nothing; N > 0 skips such steps (no update) and stops at the (N+1)-th. fp16 overflow steps, which the "
        "loss scaler already skips, do not count"))

    def __post_init__(self) -> None:
        for name in ("total_steps", "save_checkpoint_steps", "report_steps", "accumulation_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.skip_nonfinite_steps < 0:
            raise ConfigError(f"--skip_nonfinite_steps must be >= 0, got {self.skip_nonfinite_steps}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ConfigError(f"--eval_steps must be at least 1, got {self.eval_steps}")

    @property
    def eval_interval(self) -> int:
        return self.eval_steps or self.save_checkpoint_steps


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """Which dataset and tokenizer."""

    dataset_path: str = field(default="dataset.pt", metadata=flag("dataset directory written by preprocess.py"))
    data_processor: str | None = field(default=None, metadata=flag(
        "processor the dataset must have been built with (default: any; the config JSON may set it)"))
    seq_length: int | None = field(default=None, metadata=flag("batch width (default: the dataset's)"))
    prefix_lm_loss: bool = field(default=False, metadata=flag(
        "score only response tokens (seg 2) of SFT data, as the original's --prefix_lm_loss"))
    # The original's masking flags of pretrain.py. Here masking is chosen at preprocessing and recorded in the
    # dataset; given here, they must agree with it (checked before training).
    dynamic_masking: bool = field(default=False, metadata=flag(
        "accepted from the original's commands: the dataset must have been built with it"))
    whole_word_masking: bool = field(default=False, metadata=flag(
        "accepted from the original's commands: the dataset must have been built with it"))
    span_masking: bool = field(default=False, metadata=flag(
        "accepted from the original's commands: the dataset must have been built with it"))
    span_geo_prob: float | None = field(default=None, metadata=flag(
        "accepted from the original's commands: the dataset must have been built with this --span_geo_prob"))
    span_max_length: int | None = field(default=None, metadata=flag(
        "accepted from the original's commands: the dataset must have been built with this --span_max_length"))
    tokenizer: str | None = field(default=None, metadata=flag(
        "tokenizer (default: sentencepiece with --spm_model_path); only its vocabulary size is used here",
        choices=TOKENIZERS))
    spm_model_path: str | None = field(default=None, metadata=flag("SentencePiece model (LLaMA tokenizer.model)"))
    vocab_path: str | None = field(default=None, metadata=flag("vocabulary file (BERT-style tokenizers)"))
    merges_path: str | None = field(default=None, metadata=flag("bpe: GPT-2's merges.txt"))
    do_lower_case: str = field(default="true", metadata=flag("lower-case text (BERT tokenizer)",
                                                             choices=("true", "false")))
    # The original's target-side tokenizer flags (mt). The dataset's manifest already says which tokenizer made
    # its targets; given here, it must be that one.
    tgt_tokenizer: str = field(default="bert", metadata=flag("mt: target-side tokenizer", choices=TOKENIZERS))
    tgt_vocab_path: str | None = field(default=None, metadata=flag(
        "mt: target vocabulary file; must be the one the dataset was built with"))
    tgt_spm_model_path: str | None = field(default=None, metadata=flag(
        "mt: target SentencePiece model; must be the one the dataset was built with"))
    tgt_merges_path: str | None = field(default=None, metadata=flag("mt: target BPE merges file"))
    tgt_do_lower_case: str = field(default="true", metadata=flag("mt: lower-case the target side",
                                                                 choices=("true", "false")))


@dataclass(frozen=True, kw_only=True)
class DistOptions:
    """Processes. The launcher (torchrun, deepspeed) sets rank and world size; these flags are checked against it."""

    world_size: int = field(default=1, metadata=flag("total number of processes; must match the launcher's"))
    gpu_ranks: tuple[int, ...] = field(default=(), metadata=flag(
        "without a launcher: spawn one process per listed global rank on this machine (the original's mode)"))
    master_ip: str = field(default="tcp://localhost:12345", metadata=flag("rendezvous address for --gpu_ranks"))
    backend: str | None = field(default=None, metadata=flag(
        "torch.distributed backend (default: nccl on GPU, gloo on CPU)", choices=("nccl", "gloo")))
    local_rank: int | None = field(default=None, metadata=flag("set by the deepspeed launcher"))
    global_rank: int | None = field(default=None, metadata=flag("accepted for compatibility; the launcher's wins"))
    tensor_model_parallel_size: int = field(default=1, metadata=flag("only 1 is supported (use ZeRO-3)"))
    pipeline_model_parallel_size: int = field(default=1, metadata=flag("only 1 is supported (use ZeRO-3)"))
    virtual_pipeline_model_parallel_size: int | None = field(default=None, metadata=flag(
        "only unset or 1 is supported (no pipeline parallelism; use ZeRO-3)"))
    distribute_checkpointed_activations: bool = field(default=False, metadata=flag(
        "accepted for compatibility: it spreads checkpoints over tensor-parallel ranks, and there is one"))

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ConfigError(f"--world_size must be at least 1, got {self.world_size}")
        virtual = self.virtual_pipeline_model_parallel_size
        if self.tensor_model_parallel_size != 1 or self.pipeline_model_parallel_size != 1 or virtual not in (None, 1):
            raise ConfigError(
                "tensor and pipeline parallelism are not supported; shard the model with DeepSpeed ZeRO-3 "
                "(--deepspeed --enable_zero3 --deepspeed_config models/deepspeed_zero3_config.json) instead"
            )


@dataclass(frozen=True, kw_only=True)
class DeepSpeedOptions:
    """DeepSpeed, as the original's flags."""

    deepspeed: bool = field(default=False, metadata=flag("train through a DeepSpeed engine"))
    deepspeed_config: str = field(default="models/deepspeed_config.json", metadata=flag("DeepSpeed JSON config"))
    enable_zero3: bool = field(default=False, metadata=flag(
        "build the model partitioned (deepspeed.zero.Init) and load weights without a full copy on any rank"))
    deepspeed_checkpoint_activations: bool = field(default=False, metadata=flag("activation checkpointing"))
    deepspeed_checkpoint_layers_num: int = field(default=1, metadata=flag(
        "accepted for compatibility; every layer is checkpointed"))


@dataclass(frozen=True, kw_only=True)
class LoraOptions:
    """LoRA adapters (the original's flags plus the choice of adapted layers)."""

    use_lora: bool = field(default=False, metadata=flag("train LoRA adapters only; checkpoints hold only them"))
    lora_r: int = field(default=8, metadata=flag("LoRA rank"))
    lora_alpha: float = field(default=16.0, metadata=flag("LoRA scale numerator (scale = alpha / r)"))
    lora_dropout: float = field(default=0.0, metadata=flag("dropout on the LoRA branch input"))
    lora_pretrained_model_path: str | None = field(default=None, metadata=flag(
        "LoRA weights to start from (a LoRA-only file), loaded on top of --pretrained_model_path"))
    lora_target_modules: tuple[str, ...] = field(default=DEFAULT_TARGET_MODULES, metadata=flag(
        "name suffixes of the linear layers to adapt (default Q and V: linear_layers.0 linear_layers.2; "
        "e.g. add linear_layers.1 final_linear feed_forward.linear_gate feed_forward.linear_1 feed_forward.linear_2)"))

    def lora_config(self) -> LoraConfig:
        return LoraConfig(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                          target_modules=tuple(self.lora_target_modules))


@dataclass(frozen=True, kw_only=True)
class LogOptions:
    """Where reports go."""

    log_path: str | None = field(default=None, metadata=flag("also write the log to this file"))
    log_level: str = field(default="INFO", metadata=flag("console log level", choices=LOG_LEVELS))
    log_file_level: str = field(default="INFO", metadata=flag("log file level", choices=LOG_LEVELS))
    tensorboard_dir: str | None = field(default=None, metadata=flag(
        "write TensorBoard event files here (needs the tensorboard package)"))


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; built once in ``main()``."""

    model: ModelConfig
    train: TrainConfig
    optim: OptimConfig
    data: DataOptions
    dist: DistOptions
    deepspeed: DeepSpeedOptions
    lora: LoraOptions
    log: LogOptions

    def __post_init__(self) -> None:
        if self.train.skip_nonfinite_steps and self.deepspeed.deepspeed:
            raise ConfigError("--skip_nonfinite_steps is not supported under DeepSpeed (its fp16 loss scaler skips "
                              "overflowing steps itself); leave it at 0 to stop at the first non-finite step")


SECTIONS: dict[str, type] = {
    "train": TrainConfig, "optim": OptimConfig, "data": DataOptions, "dist": DistOptions,
    "deepspeed": DeepSpeedOptions, "lora": LoraOptions, "log": LogOptions,
}
_TITLES = {
    "train": "training loop", "optim": "optimisation", "data": "data and tokenizer", "dist": "processes",
    "deepspeed": "DeepSpeed", "lora": "LoRA", "log": "logging",
}
# Flags of the original pretrain.py that have no effect here; accepted so existing command lines keep working.
IGNORED_FLAGS = {
    "--instances_buffer_size": (int, "accepted for compatibility; the loader reads instances on demand"),
    "--lr_decay": (float, "accepted for compatibility; unused by pretraining, as in the original"),
}


# ---------------------------------------------------------------------- flags
def add_pretrain_args(parser: argparse.ArgumentParser) -> None:
    """All ``pretrain.py`` flags: the run sections, the model options and the accepted-but-ignored ones."""
    parser.add_argument("--config_path", default=None, help="model JSON config (models/llama/7b_config.json, ...)")
    for key, cls in SECTIONS.items():
        add_dataclass_flags(parser, cls, title=_TITLES[key])
    group = parser.add_argument_group("accepted for compatibility")
    for name, (kind, help_text) in IGNORED_FLAGS.items():
        group.add_argument(name, type=kind, default=None, help=help_text)
    add_model_args(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Pre-train or fine-tune a model (TencentPretrain-compatible flags).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_pretrain_args(parser)
    return parser


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """Turn the parsed namespace into a RunConfig (each section validated by its dataclass)."""
    sections = {key: dataclass_from_args(cls, args) for key, cls in SECTIONS.items()}
    return RunConfig(model=model_config_from_args(args), **sections)
