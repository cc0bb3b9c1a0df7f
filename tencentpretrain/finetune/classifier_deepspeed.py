"""Classification through DeepSpeed: ``finetune/run_classifier_deepspeed.py``,
``finetune/run_classifier_mt_deepspeed.py`` and their ``inference/*_deepspeed_infer.py``.

Launch with ``deepspeed --num_gpus N finetune/run_classifier_deepspeed.py --world_size N ...`` (or ``torchrun``;
one process needs no launcher). The data, heads, report lines and outputs are those of ``run_classifier.py`` /
``run_classifier_mt.py``; what changes is the step: every process takes ``--batch_size`` examples of each step's
``--batch_size * world_size`` (the original's per-GPU batch), the model is wrapped in a DeepSpeed engine built
from ``--deepspeed_config`` (its ``optimizer``/``scheduler`` blocks are ignored: the fine-tuning AdamW and warm-up
are used, as in the original) and the engine averages the gradients. A step's loss is weighted so that the
gradient is the mean over the whole step's examples, so N processes with ``--batch_size B`` follow the
one-process run with ``--batch_size N*B``. Every process evaluates the dev set; process 0 reports.

Output: unlike the original (a DeepSpeed checkpoint directory per epoch), the best epoch's (last epoch's for
multi-task) fp32 weights are gathered from the engine and saved as one TencentPretrain file at
``--output_model_path``, which ``run_classifier_infer.py`` / ``run_classifier_mt_infer.py`` load as they load
``run_classifier.py``'s. The inference scripts split the examples across the launched processes and process 0
writes the predictions (the formats of the non-DeepSpeed scripts); the model runs in fp32 without an engine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.cli import add_dataclass_flags, dataclass_from_args
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.finetune import classifier as single
from tencentpretrain.finetune import classifier_mt as multi
from tencentpretrain.finetune.data import Example
from tencentpretrain.finetune.loop import Evaluate, fit, log_file, predict, seed_run, to_device, training_steps
from tencentpretrain.finetune.model import TaskModel, build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    FinetuneOptimConfig,
    FinetuneOptions,
    InferOptions,
    ParsedRun,
    finetune_parser,
    infer_parser,
    parse_run,
    required_labels_num,
)
from tencentpretrain.models.model import INIT_STD
from tencentpretrain.training import deepspeed_glue as glue
from tencentpretrain.training.config import DeepSpeedOptions, DistOptions
from tencentpretrain.training.optim import build_optimizer, build_scheduler, param_groups
from tencentpretrain.training.parallel import (
    DistEnv,
    all_reduce_sum,
    broadcast_object,
    init_distributed,
    shutdown_distributed,
)

logger = logging.getLogger("tencentpretrain.finetune")


# ---------------------------------------------------------------------- processes and the engine
def add_process_flags(parser: argparse.ArgumentParser) -> None:
    add_dataclass_flags(parser, DistOptions, title="processes")
    add_dataclass_flags(parser, DeepSpeedOptions, title="DeepSpeed")


def start_processes(args: argparse.Namespace) -> DistEnv:
    """Join the launcher's process group (gloo on CPU); only process 0 logs below WARNING."""
    dist_options: DistOptions = dataclass_from_args(DistOptions, args)
    if dist_options.gpu_ranks:
        raise ConfigError("--gpu_ranks is not used by the DeepSpeed scripts: start them with "
                          "`deepspeed --num_gpus N <script> --world_size N ...`")
    env = init_distributed(dist_options, use_deepspeed=True)
    if not env.is_main:
        logging.getLogger("tencentpretrain").setLevel(logging.WARNING)
    return env


def engine_config(ds_json: dict[str, Any], *, micro_batch: int, env: DistEnv, max_grad_norm: float,
                  zero3: bool, config_path: str) -> dict[str, Any]:
    """The engine config: the user's JSON with the batch sizes and clipping of this run; the JSON's optimizer
    and scheduler blocks are dropped (the fine-tuning optimizer and schedule are passed to the engine)."""
    cfg = copy.deepcopy(ds_json)
    for key in ("optimizer", "scheduler"):
        if cfg.pop(key, None) is not None:
            logger.info("DeepSpeed config: the %r block is ignored; the fine-tuning optimizer is used", key)
    cfg.update(train_micro_batch_size_per_gpu=micro_batch, gradient_accumulation_steps=1,
               train_batch_size=micro_batch * env.world_size, gradient_clipping=max_grad_norm,
               zero_allow_untested_optimizer=True)
    cfg.setdefault("steps_per_print", glue.QUIET_STEPS_PER_PRINT)
    cfg.setdefault("zero_force_ds_cpu_optimization", False)
    if glue.deepspeed_precision(cfg) == "fp16" and env.device.type == "cpu":
        raise ConfigError(f"{config_path} enables fp16, which DeepSpeed cannot run on the CPU; use a config with "
                          "fp16 off (models/deepspeed_cpu_config.json, or bf16 on)")
    if zero3 and glue.zero_stage(cfg) != 3:
        raise ConfigError(f"--enable_zero3 but {config_path} sets ZeRO stage {glue.zero_stage(cfg)}; use "
                          "models/deepspeed_zero3_config.json (or its _cpu variant)")
    return cfg


def build_model(model_class: type[TaskModel], run: ParsedRun, cfg: dict[str, Any], env: DistEnv,
                **head_args) -> TaskModel:
    """The task model, pretrained or initialised; under --enable_zero3 built partitioned and filled one tensor
    at a time (no process holds the whole model)."""
    ds_options: DeepSpeedOptions = dataclass_from_args(DeepSpeedOptions, run.args)
    pretrained = run.args.pretrained_model_path
    if not ds_options.enable_zero3:
        model = build_task_model(model_class, run.model_config, run.tokenizer.vocab_size, pretrained, **head_args)
    else:
        with glue.zero3_init(cfg):
            model = model_class(run.model_config, run.tokenizer.vocab_size, **head_args)
        if pretrained:
            head = tuple(k for k in model.state_dict() if not k.startswith(("embedding.", "encoder.")))
            # a pretrained checkpoint's heads (target.*) are not part of a task model
            glue.load_pretrained_zero3(model, pretrained, env, allow_missing=head, allow_unexpected=("target.",))
        else:
            glue.init_weights_zero3(model, env, std=INIT_STD, deep_init_layers=None)
    if ds_options.deepspeed_checkpoint_activations:
        from tencentpretrain.transforms.activation_checkpointing import enable_activation_checkpointing

        enable_activation_checkpointing(model)
    return model


def initialize_engine(model: TaskModel, cfg: dict[str, Any], optim: FinetuneOptimConfig, steps: int) -> Any:
    """deepspeed.initialize with the fine-tuning optimizer (DeepSpeed's CPU Adam when the optimizer is offloaded)
    and the linear warm-up schedule over ``steps``."""
    deepspeed = glue.import_deepspeed()
    if glue.offloads_optimizer(cfg) and optim.optimizer == "adamw":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(param_groups(model, optim.weight_decay), lr=optim.learning_rate,
                                     betas=(optim.adam_beta1, optim.adam_beta2), eps=optim.adam_epsilon,
                                     bias_correction=optim.bias_correction, adamw_mode=True)
    else:
        optimizer = build_optimizer(model, optim)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=cfg, dist_init_required=False,
                                      lr_scheduler=lambda opt: build_scheduler(opt, optim, steps))
    return engine


def share_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of this rank's consecutive share of ``count`` items (shares differ by at most one)."""
    size, extra = divmod(count, world_size)
    start = rank * size + min(rank, extra)
    return start, start + size + (rank < extra)


class DeepSpeedStepper:
    """``fit``'s step through the engine: this rank's share of the step's examples, weighted so that the
    averaged gradient is the mean over all of them."""

    def __init__(self, engine: Any, env: DistEnv, collate: Callable) -> None:
        self.engine, self.env, self.collate = engine, env, collate

    def step(self, examples: list[Example]) -> float:
        start, end = share_bounds(len(examples), self.env.rank, self.env.world_size)
        share = examples[start:end] or examples[:1]  # a rank without a share still joins the collectives
        weight = (end - start) * self.env.world_size / len(examples)
        loss = self.engine(to_device(self.collate(share), self.env.device)).loss
        self.engine.backward(loss * weight)
        self.engine.step()
        # sum over ranks of loss * share / step size: the step's mean loss, as one process reports it
        return float(all_reduce_sum(self.env, loss.detach().float() * weight / self.env.world_size))

    def save(self, path: str) -> None:
        """Gather the fp32 weights (every rank takes part) and save them from rank 0, atomically."""
        state = full_fp32_state(self.engine.module)
        if self.env.is_main:
            save_checkpoint(state, path)
        dist.barrier()


def full_fp32_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict with every parameter's full fp32 value (the optimizer's master copy under ZeRO
    or bf16)."""
    from deepspeed.utils import safe_get_full_fp32_param

    full = {}
    for name, param in module.named_parameters():
        value = safe_get_full_fp32_param(param)
        full[name] = (param.detach() if value is None else value).float().cpu().clone()
    return {k: full.get(k, v) for k, v in module.state_dict().items()}


def agreed(env: DistEnv, evaluate: Evaluate) -> Evaluate:
    """``evaluate`` on every rank (ZeRO-3 forwards are collective), with rank 0's score on all of them so that
    every rank saves the same epochs."""
    return lambda model, examples: broadcast_object(env, evaluate(model, examples))


# ---------------------------------------------------------------------- fine-tuning
def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_classifier_deepspeed.py``."""
    run = parse_run(finetune_parser(__doc__, _with_process_flags(single.add_classifier_flags), adversarial=False),
                    argv, lambda args: {"labels_num": args.labels_num or single.count_labels(args.train_path)})
    options: FinetuneOptions = run.options(FinetuneOptions)
    labels_num = run.model_config.labels_num
    collate = single.collate_for(run.tokenizer)

    def read(path: str, soft: bool = False) -> list[Example]:
        return single.read_classification(path, run.tokenizer, options.seq_length, labels_num=labels_num,
                                          soft_targets=soft)

    def evaluate(model: TaskModel, examples: Sequence[Example]) -> float:
        return single.evaluate_classifier(model, examples, options.batch_size, collate)

    def test(path: str) -> None:
        model = single.Classifier(run.model_config, run.tokenizer.vocab_size, labels_num=labels_num)
        load_finetuned_weights(model, path)
        evaluate(model, read(options.test_path))

    train_with_engine(run, single.Classifier, {"labels_num": labels_num, "soft_alpha": run.args.soft_alpha},
                      train=lambda: read(options.train_path, run.args.soft_targets),
                      dev=lambda: read(options.dev_path), evaluate=evaluate, collate=collate, keep="best",
                      test=test if options.test_path else None)


def mt_finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_classifier_mt_deepspeed.py``."""
    parser = finetune_parser(__doc__, _with_process_flags(multi.add_mt_flags), adversarial=False)
    multi.make_optional(parser, "train_path", "dev_path")
    parser.add_argument_group("classification").add_argument(
        "--soft_targets", action="store_true", help="accepted for compatibility; multi-task training uses labels")
    parser.add_argument("--soft_alpha", type=float, default=0.5, help="accepted for compatibility")
    run = parse_run(parser, argv)
    files = multi.task_files(run.args.dataset_path_list)
    labels_num_list = [single.count_labels(train) for train, _ in files]
    run.args.train_path = " ".join(train for train, _ in files)
    run.args.dev_path = " ".join(dev for _, dev in files)
    options: FinetuneOptions = run.options(FinetuneOptions)
    collate = single.collate_for(run.tokenizer)

    def read(column: int) -> list[Example]:
        return [{**e, "task": task} for task, paths in enumerate(files)
                for e in single.read_classification(paths[column], run.tokenizer, options.seq_length,
                                                    labels_num=labels_num_list[task])]

    train_with_engine(run, multi.MultitaskClassifier, {"labels_num_list": labels_num_list},
                      train=lambda: read(0), dev=lambda: read(1),
                      evaluate=multi.task_evaluator(files, labels_num_list, options.batch_size, collate),
                      collate=collate, keep="last", batcher=multi.one_task_batches)


def _with_process_flags(add_task_flags: Callable[[argparse.ArgumentParser], None]):
    def add(parser: argparse.ArgumentParser) -> None:
        add_task_flags(parser)
        add_process_flags(parser)
    return add


def train_with_engine(run: ParsedRun, model_class: type[TaskModel], head_args: dict[str, Any], *,
                      train: Callable[[], list[Example]], dev: Callable[[], list[Example]], evaluate: Evaluate,
                      collate: Callable, keep: str, test: Callable[[str], None] | None = None,
                      **fit_args) -> None:
    """The fine-tuning loop (``fit``) with DeepSpeed's step, on every launched process."""
    options: FinetuneOptions = run.options(FinetuneOptions)
    optim: FinetuneOptimConfig = run.options(FinetuneOptimConfig)
    ds_options: DeepSpeedOptions = dataclass_from_args(DeepSpeedOptions, run.args)
    env = start_processes(run.args)
    try:
        with log_file(options.log_path if env.is_main else None):
            cfg = engine_config(glue.read_deepspeed_json(ds_options.deepspeed_config), micro_batch=options.batch_size,
                                env=env, max_grad_norm=optim.max_grad_norm, zero3=ds_options.enable_zero3,
                                config_path=ds_options.deepspeed_config)
            seed_run(options)
            model = build_model(model_class, run, cfg, env, **head_args)
            examples = train()
            # each step takes --batch_size examples per process
            step_options = dataclasses.replace(options, batch_size=options.batch_size * env.world_size)
            engine = initialize_engine(model, cfg, optim, training_steps(len(examples), step_options))
            logger.info("Processes: %d, batch size per process: %d, DeepSpeed precision: %s, ZeRO stage %d",
                        env.world_size, options.batch_size, glue.deepspeed_precision(cfg), glue.zero_stage(cfg))
            fit(engine.module, examples, dev, None, collate=collate, evaluate=agreed(env, evaluate),
                options=step_options, optim=optim, keep=keep, stepper=DeepSpeedStepper(engine, env, collate),
                **fit_args)
            if test is not None and env.is_main:
                logger.info("Test set evaluation.")
                test(options.output_model_path)
    finally:
        shutdown_distributed()


# ---------------------------------------------------------------------- inference
def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_classifier_deepspeed_infer.py``."""
    run = parse_run(infer_parser(__doc__, _with_process_flags(single.add_classifier_infer_flags)), argv)
    labels_num = required_labels_num(run.model_config.labels_num)
    model = single.Classifier(run.model_config, run.tokenizer.vocab_size, labels_num=labels_num)

    def write(path: str, logits_batches: list[torch.Tensor]) -> None:
        single.write_class_prediction_lines(path, logits_batches, logits=run.args.output_logits,
                                            prob=run.args.output_prob)

    def predict_share(examples: Sequence[Example], batch_size: int, collate: Callable) -> list[torch.Tensor]:
        return [logits for _, logits in predict(model, examples, batch_size, collate)]

    predict_with_processes(run, model, predict_share, write)


def mt_infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_classifier_mt_deepspeed_infer.py``."""
    run = parse_run(infer_parser(__doc__, _with_process_flags(multi.add_mt_infer_flags)), argv)
    labels_num_list = run.args.labels_num_list
    if not labels_num_list or min(labels_num_list) < 1:
        raise ConfigError("--labels_num_list is required: each task's number of labels (>= 1), in fine-tuning order")
    model = multi.MultitaskClassifier(run.model_config, run.tokenizer.vocab_size, labels_num_list=labels_num_list)

    def write(path: str, logits_batches: list[list[torch.Tensor]]) -> None:
        multi.write_mt_prediction_lines(path, logits_batches, logits=run.args.output_logits,
                                        prob=run.args.output_prob)

    def predict_share(examples: Sequence[Example], batch_size: int, collate: Callable) -> list[list[torch.Tensor]]:
        return list(multi.predict_all_tasks(model, examples, batch_size, collate))

    predict_with_processes(run, model, predict_share, write)


def predict_with_processes(run: ParsedRun, model: TaskModel, predict_share: Callable, write: Callable) -> None:
    """Every process predicts its consecutive share of --test_path; process 0 writes them all, in order."""
    options: InferOptions = run.options(InferOptions)
    load_finetuned_weights(model, options.load_model_path)
    examples = single.read_classification(options.test_path, run.tokenizer, options.seq_length, labels_num=None,
                                          with_labels=False)
    if not examples:
        raise DataError(f"{options.test_path}: no examples to predict")
    env = start_processes(run.args)
    try:
        model.to(env.device)
        logger.info("The number of prediction instances: %d", len(examples))
        start, end = share_bounds(len(examples), env.rank, env.world_size)
        share = predict_share(examples[start:end], options.batch_size, single.collate_for(run.tokenizer))
        shares = [None] * env.world_size if env.is_main else None
        dist.gather_object([t.cpu() if isinstance(t, torch.Tensor) else [x.cpu() for x in t] for t in share],
                           shares, dst=0)
        if env.is_main:
            write(options.prediction_path, [batch for rank_share in shares for batch in rank_share])
    finally:
        shutdown_distributed()
