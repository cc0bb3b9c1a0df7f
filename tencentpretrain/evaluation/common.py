"""What the evaluation tools share: the flags that name the model to load (``tencentpretrain.model_spec``'s
``ModelSpec``), progress bars that only draw on a terminal, and atomic report writing."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from tencentpretrain.atomic import write_json, write_text  # noqa: F401 (re-exported for the reports)
from tencentpretrain.dtypes import AUTO, dtype_choices
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.model_spec import (  # noqa: F401  (ModelSpec, load_tokenizer re-exported)
    ModelSpec,
    load_model_for_inference,
    load_spec_model,
    load_tokenizer,
)
from tencentpretrain.models.model import Model
from tencentpretrain.tokenizers import Tokenizer

logger = logging.getLogger(__name__)

T = TypeVar("T")


def add_model_spec_args(parser: argparse.ArgumentParser) -> None:
    """The flags of ``ModelSpec`` (original TencentPretrain names where they exist)."""
    group = parser.add_argument_group("model")
    group.add_argument("--config_path", help="TencentPretrain model config (JSON); not needed for an HF directory")
    group.add_argument(
        "--load_model_path", help="weights: .bin, .safetensors, a sharded directory, or an HF model directory"
    )
    group.add_argument("--lora_path", help="LoRA adapter weights applied on top of the model")
    group.add_argument("--spm_model_path", help="SentencePiece tokenizer model (LLaMA's tokenizer.model)")
    group.add_argument("--tokenizer", help="registered tokenizer name (default: sentencepiece with --spm_model_path)")
    group.add_argument("--vocab_path", help="vocabulary file of a non-SentencePiece tokenizer")
    group.add_argument("--merges_path", help="bpe: GPT-2's merges.txt")
    group.add_argument("--dtype", default=AUTO, choices=dtype_choices(AUTO),
                        help="weight dtype (auto: fp32 on CPU, bf16 on a GPU)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (a GPU when there is one)")


def model_spec_from_args(args: argparse.Namespace) -> ModelSpec:
    """The ModelSpec of parsed ``add_model_spec_args`` flags."""
    return ModelSpec(
        config_path=args.config_path,
        load_model_path=args.load_model_path,
        lora_path=args.lora_path,
        spm_model_path=args.spm_model_path,
        tokenizer=args.tokenizer,
        vocab_path=args.vocab_path,
        merges_path=args.merges_path,
        dtype=args.dtype,
        device=args.device,
    )


def load_model_and_tokenizer(spec: ModelSpec) -> tuple[Model, Tokenizer]:
    """(model in eval mode on ``spec``'s device at its dtype, tokenizer). The vocabulary size comes from the
    config when it sets one, else from the tokenizer (as in the original). An HF directory brings its config, and
    its ``tokenizer.model`` when no tokenizer is given."""
    tokenizer = load_tokenizer(spec)
    if spec.quantization:  # an int8/int4 model is evaluated as inference runs it: LoRA merged, quantized
        return load_model_for_inference(spec, tokenizer), tokenizer
    return load_spec_model(spec, tokenizer), tokenizer


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """``tqdm`` over ``iterable`` when stderr is a terminal, the plain iterable otherwise (logs stay clean)."""
    if not sys.stderr.isatty():
        yield from iterable
        return
    from tqdm import tqdm

    yield from tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True)


def warn_if_beyond_context(model: torch.nn.Module, length: int, what: str) -> None:
    """Log a warning when ``length`` tokens exceed the model config's ``max_seq_length`` (the context it was
    trained with: RoPE models still run, but their numbers there mean little)."""
    limit = getattr(getattr(model, "config", None), "max_seq_length", None)
    if limit and length > limit:
        logger.warning("%s=%d is longer than the model's max_seq_length=%d", what, length, limit)


def write_jsonl(path: str, records: Sequence[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically."""
    write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def nonblank_lines(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) of every non-blank line of a UTF-8 file."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def json_line(line: str, path: str, number: int, *, hint: str = "") -> Any:
    """The JSON value of one line; a malformed line is a DataError naming ``path:number`` (plus ``hint``)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{number}: not valid JSON ({e.msg}){hint}") from None


def require_file(path: str, flag: str) -> str:
    """``path`` if it is an existing file, else a ConfigError naming ``flag``."""
    if not os.path.isfile(path):
        raise ConfigError(f"{flag} {path}: no such file")
    return path
