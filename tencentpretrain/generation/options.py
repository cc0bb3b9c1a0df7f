"""Command-line options shared by the inference entry points, and loading a model ready for generation.

The flag names and defaults are llama_inference's (``--top_k 10 --top_p 1 --temperature 0.85
--repetition_penalty 1.15 --repetition_penalty_range 1024``). ``--seq_length`` keeps its original meaning: the
total length of prompt plus generated text per row (the KV cache size). ``--max_new_tokens`` (new) caps the
generated tokens; without it a row generates until eos or ``--seq_length``, as in the original.
"""

from __future__ import annotations

import argparse
import logging

import torch

from tencentpretrain.config import add_model_args, model_config_from_args, parse_args_with_config
from tencentpretrain.errors import ConfigError
from tencentpretrain.generation.engine import GenerationConfig
from tencentpretrain.generation.sampling import SamplingParams
from tencentpretrain.model_spec import ModelSpec, load_model_for_inference, load_tokenizer
from tencentpretrain.models.model import Model
from tencentpretrain.registry import TOKENIZERS
from tencentpretrain.tokenizers import Tokenizer
from tencentpretrain.tokenizers.templates import template_names

logger = logging.getLogger(__name__)


def add_inference_args(parser: argparse.ArgumentParser, *, seq_length: int = 128, batch_size: int = 1) -> None:
    """Model, tokenizer, sampling and length flags (the model architecture flags come with them)."""
    group = parser.add_argument_group("model and tokenizer")
    group.add_argument("--load_model_path", help="TencentPretrain .bin/.safetensors, sharded dir, or HF directory")
    group.add_argument("--config_path", help="model config JSON (not needed for an HF directory)")
    group.add_argument("--spm_model_path", help="SentencePiece tokenizer.model (default: the HF directory's)")
    group.add_argument("--tokenizer", choices=TOKENIZERS.names(),
                       help="tokenizer (default: sentencepiece with --spm_model_path, else bert with --vocab_path)")
    group.add_argument("--vocab_path", help="vocabulary file of a non-SentencePiece tokenizer (bert, char, space, "
                       "bpe's vocab.json; hfpretrained: a saved HF tokenizer directory)")
    group.add_argument("--merges_path", help="bpe: GPT-2's merges.txt")
    group.add_argument("--lora_path", help="LoRA adapter file to load on top and merge")
    group.add_argument("--use_int8", action="store_true", help="int8 weights (per output channel)")
    group.add_argument("--use_int4", action="store_true", help="int4 weights (per group of input channels)")
    group.add_argument("--int4_group_size", type=int, default=32, help="input channels per int4 scale")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1")
    group.add_argument("--fp16", action="store_true", help="half precision weights (GPU)")
    group.add_argument("--bf16", action="store_true", help="bfloat16 weights")
    group.add_argument("--fp32", action="store_true", help="float32 weights (the default on the CPU; on a GPU with "
                       "bfloat16 the default is --bf16)")
    group.add_argument("--world_size", type=int, default=1, help="accepted for compatibility; only 1 is supported")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--batch_size", type=int, default=batch_size, help="prompts decoded together")
    gen.add_argument("--seq_length", type=int, default=seq_length, help="prompt + generated tokens per row")
    gen.add_argument("--max_new_tokens", type=int, default=None, help="generated tokens at most (default: fill --seq_length)")
    gen.add_argument("--top_k", type=int, default=10, help="sample from the k most likely tokens (0 = off)")
    gen.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    gen.add_argument("--temperature", type=float, default=0.85, help="0 = greedy")
    gen.add_argument("--repetition_penalty", type=float, default=1.15, help="1 = off")
    gen.add_argument("--repetition_penalty_range", type=int, default=1024, help="recent tokens penalised (0 = all)")
    gen.add_argument("--repetition_penalty_slope", type=float, default=0.0, help="0 = flat penalty")
    gen.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--prompt_template", default="user_bot", choices=template_names(), help="chat template")
    add_model_args(parser)


def parse_inference_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse with the JSON config as defaults (defaults < JSON < flags)."""
    args, _ = parse_args_with_config(parser, argv)
    if args.world_size != 1:
        raise ConfigError("--world_size > 1 is not supported: run on one device (tensor parallelism was removed)")
    if args.use_int8 and args.use_int4:
        raise ConfigError("choose one of --use_int8 and --use_int4")
    return args


def sampling_from_args(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, repetition_penalty_range=args.repetition_penalty_range,
        repetition_penalty_slope=args.repetition_penalty_slope, seed=args.seed,
    )


def generation_from_args(args: argparse.Namespace, stop_strings: tuple[str, ...] = ()) -> GenerationConfig:
    """GenerationConfig of the flags; without --max_new_tokens a row may fill --seq_length."""
    return GenerationConfig(
        max_new_tokens=args.max_new_tokens or args.seq_length,
        sampling=sampling_from_args(args),
        stop_strings=tuple(args.stop) + stop_strings,
    )


def model_spec_from_inference_args(args: argparse.Namespace) -> ModelSpec:
    """The ModelSpec of the inference flags (``--fp16``/``--bf16`` pick the dtype, ``--use_int8``/``--use_int4``
    the quantization)."""
    return ModelSpec(
        load_model_path=args.load_model_path, config_path=args.config_path, spm_model_path=args.spm_model_path,
        tokenizer=args.tokenizer, vocab_path=args.vocab_path, merges_path=args.merges_path, lora_path=args.lora_path,
        dtype=inference_dtype(args),
        device=args.device, quantization="int8" if args.use_int8 else "int4" if args.use_int4 else None,
        int4_group_size=args.int4_group_size,
    )


def inference_dtype(args: argparse.Namespace) -> str:
    """``--fp16``/``--bf16``/``--fp32`` when given; otherwise bf16 on a GPU that has it (half the memory of fp32,
    and its tensor cores), fp32 elsewhere."""
    chosen = [name for name in ("fp16", "bf16", "fp32") if getattr(args, name, False)]
    if len(chosen) > 1:
        raise ConfigError(f"choose one of --{' and --'.join(chosen)}")
    if chosen:
        return chosen[0]
    device = torch.device(args.device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def load_tokenizer_for_inference(args: argparse.Namespace) -> Tokenizer:
    """The tokenizer of --spm_model_path (or --tokenizer/--vocab_path), else the tokenizer.model of an HF
    directory."""
    return load_tokenizer(model_spec_from_inference_args(args))


def load_for_inference(args: argparse.Namespace, tokenizer: Tokenizer) -> Model:
    """The model of the flags: loaded strictly, LoRA merged, moved, then optimized or quantized."""
    spec = model_spec_from_inference_args(args)
    if spec.load_model_path is None:
        raise ConfigError("--load_model_path is required")
    if torch.device(spec.device).type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for what stays in float32 (an fp32 model, norms)
    model_config = None if spec.is_hf_directory else model_config_from_args(args)
    return load_model_for_inference(spec, tokenizer, model_config)


def load_tokenizer_and_model(args: argparse.Namespace) -> tuple[Model, Tokenizer]:
    """(model, tokenizer) of the flags: what a server's engine process builds (picklable with ``partial``)."""
    tokenizer = load_tokenizer_for_inference(args)
    return load_for_inference(args, tokenizer), tokenizer
