"""What the evaluation tools share: which model to load (``ModelSpec``), the flags that name it, progress bars
that only draw on a terminal, and atomic report writing."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from tencentpretrain.atomic import write_json, write_text  # noqa: F401 (re-exported for the reports)
from tencentpretrain.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

T = TypeVar("T")
HF_SPM_NAME = "tokenizer.model"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model to evaluate: its config, weights, tokenizer files and where to run it."""

    config_path: str | None = None  # TencentPretrain JSON config; unused for an HF directory
    load_model_path: str | None = None  # .bin / .safetensors / sharded dir / HF directory
    lora_path: str | None = None  # LoRA adapter file applied on top
    spm_model_path: str | None = None  # SentencePiece model (LLaMA's tokenizer.model)
    tokenizer: str | None = None  # registered tokenizer name; default from the files given
    vocab_path: str | None = None  # vocabulary file of non-SentencePiece tokenizers
    dtype: str = "auto"  # float32 | float16 | bfloat16 | auto (float32 on CPU, bfloat16 on GPU)
    device: str = "auto"  # cpu | cuda | cuda:N | auto

    def torch_device(self) -> torch.device:
        """The device to run on (``auto``: the first GPU when there is one)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        """The weight dtype (``auto``: float32 on CPU, bfloat16 on a GPU)."""
        if self.dtype == "auto":
            return torch.bfloat16 if self.torch_device().type == "cuda" else torch.float32
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype!r}: choose from auto, {', '.join(DTYPES)}")
        return DTYPES[self.dtype]


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
    group.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="weight dtype (auto: fp32 on CPU)")
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
        dtype=args.dtype,
        device=args.device,
    )


def load_tokenizer(spec: ModelSpec):
    """The tokenizer named by ``spec`` (built with the data pipeline's ``build_tokenizer``)."""
    from tencentpretrain.tokenizers import TokenizerConfig, build_tokenizer

    if not (spec.spm_model_path or spec.vocab_path):
        raise ConfigError("no tokenizer given: pass --spm_model_path (or --tokenizer with --vocab_path)")
    return build_tokenizer(
        TokenizerConfig(tokenizer=spec.tokenizer, spm_model_path=spec.spm_model_path, vocab_path=spec.vocab_path)
    )


def load_model_and_tokenizer(spec: ModelSpec):
    """(model in eval mode on ``spec``'s device, tokenizer). The vocabulary size comes from the config when it
    sets one, else from the tokenizer (as in the original). An HF directory brings its config, and its
    ``tokenizer.model`` when no tokenizer is given."""
    from tencentpretrain.config import load_model_config
    from tencentpretrain.convert.loading import is_hf_directory, load_model

    hf = bool(spec.load_model_path) and is_hf_directory(spec.load_model_path)
    bundled = os.path.join(spec.load_model_path or "", HF_SPM_NAME)
    if hf and not (spec.spm_model_path or spec.vocab_path) and os.path.isfile(bundled):
        spec = dataclasses.replace(spec, spm_model_path=bundled)  # the HF directory's own tokenizer.model
    tokenizer = load_tokenizer(spec)
    if not hf and not spec.config_path:
        raise ConfigError("--config_path is required unless --load_model_path is an HF model directory")
    if spec.load_model_path is None:
        logger.warning("no --load_model_path: evaluating a randomly initialised model")
    config = None if hf else load_model_config(spec.config_path)
    vocab_size = None if hf or config.vocab_size is not None else tokenizer.vocab_size
    model = load_model(
        config, spec.load_model_path, vocab_size=vocab_size, lora_path=spec.lora_path, dtype=spec.torch_dtype()
    )
    return model.to(spec.torch_device()), tokenizer


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
