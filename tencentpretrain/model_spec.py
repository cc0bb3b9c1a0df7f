"""One description of a model to load (``ModelSpec``) for inference, evaluation and the server, and the loading
that all of them share: the tokenizer, the model config, strict weights (+ LoRA), dtype, device, quantization.

The entry points keep their original flags (``--fp16``/``--bf16``/``--use_int8`` for inference, ``--dtype`` for
evaluation; see ``generation.options`` and ``evaluation.common``) and each turns them into this one spec. Dtype
names are the one vocabulary of ``tencentpretrain.dtypes`` (``fp16`` and ``float16`` alike, plus ``auto``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

import torch

from tencentpretrain.config import ModelConfig, load_model_config
from tencentpretrain.convert.loading import is_hf_directory, load_model
from tencentpretrain.dtypes import AUTO, canonical_dtype, parse_dtype
from tencentpretrain.errors import ConfigError
from tencentpretrain.models.model import Model
from tencentpretrain.tokenizers import Tokenizer, TokenizerConfig, build_tokenizer
from tencentpretrain.transforms.lora import merge_lora_
from tencentpretrain.transforms.quantize import optimize_for_inference, quantize_model

logger = logging.getLogger(__name__)

HF_SPM_NAME = "tokenizer.model"  # the SentencePiece model an HF LLaMA directory ships
HF_TOKENIZER_JSON = "tokenizer.json"  # a fast tokenizer an HF directory ships (Qwen2 has no tokenizer.model)
QUANTIZATIONS = ("int8", "int4")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model to load: its config, weights, tokenizer files, and how to run it."""

    config_path: str | None = None  # TencentPretrain JSON config; unused for an HF directory
    load_model_path: str | None = None  # .bin / .safetensors / sharded dir / HF directory
    lora_path: str | None = None  # LoRA adapter file applied on top
    spm_model_path: str | None = None  # SentencePiece model (LLaMA's tokenizer.model)
    tokenizer: str | None = None  # registered tokenizer name; default from the files given
    vocab_path: str | None = None  # vocabulary file of non-SentencePiece tokenizers
    merges_path: str | None = None  # bpe: GPT-2's merges.txt
    dtype: str = AUTO  # fp32 | fp16 | bf16 (or float32 | float16 | bfloat16) | auto: fp32 on CPU, bf16 on a GPU
    device: str = AUTO  # cpu | cuda | cuda:N | auto (a GPU when there is one)
    quantization: str | None = None  # int8 | int4 weights (inference)
    int4_group_size: int = 32  # input channels per int4 scale

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", canonical_dtype(self.dtype, special=(AUTO,)))
        if self.quantization in ("", "none"):  # as text (evaluate_generation's --system k=v)
            object.__setattr__(self, "quantization", None)
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization {self.quantization!r}: choose from {', '.join(QUANTIZATIONS)}")
        try:
            object.__setattr__(self, "int4_group_size", int(self.int4_group_size))
        except ValueError:
            raise ConfigError(f"int4_group_size {self.int4_group_size!r} is not a number") from None
        if self.int4_group_size < 1:
            raise ConfigError(f"int4_group_size must be positive, got {self.int4_group_size}")

    @property
    def is_hf_directory(self) -> bool:
        return bool(self.load_model_path) and is_hf_directory(self.load_model_path)

    def torch_device(self) -> torch.device:
        """The device to run on (``auto``: the first GPU when there is one)."""
        if self.device == AUTO:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        """The weight dtype (``auto``: float32 on CPU, bfloat16 on a GPU)."""
        if self.dtype == AUTO:
            return torch.bfloat16 if self.torch_device().type == "cuda" else torch.float32
        return parse_dtype(self.dtype, special=())


def load_tokenizer(spec: ModelSpec) -> Tokenizer:
    """The tokenizer of ``spec``: its SentencePiece model or vocabulary file, else an HF directory's
    ``tokenizer.model``, else the HF tokenizer saved in that directory (``tokenizer.json``: Qwen2's byte-level BPE,
    read through transformers as ``--tokenizer hfpretrained``)."""
    if not (spec.spm_model_path or spec.vocab_path):
        directory = spec.load_model_path or ""
        bundled = os.path.join(directory, HF_SPM_NAME)
        if spec.is_hf_directory and os.path.isfile(bundled):
            spec = dataclasses.replace(spec, spm_model_path=bundled)
        elif spec.is_hf_directory and os.path.isfile(os.path.join(directory, HF_TOKENIZER_JSON)):
            spec = dataclasses.replace(spec, tokenizer="hfpretrained", vocab_path=directory)
        else:
            raise ConfigError("no tokenizer given: pass --spm_model_path tokenizer.model (or --tokenizer with "
                              "--vocab_path)")
    return build_tokenizer(
        TokenizerConfig(tokenizer=spec.tokenizer, spm_model_path=spec.spm_model_path, vocab_path=spec.vocab_path,
                        merges_path=spec.merges_path)
    )


def model_config_of(spec: ModelSpec) -> ModelConfig | None:
    """The ModelConfig at ``spec.config_path``; None for an HF directory, which brings its own."""
    if spec.is_hf_directory:
        return None
    if not spec.config_path:
        raise ConfigError("--config_path is required unless --load_model_path is an HF model directory")
    return load_model_config(spec.config_path)


def load_spec_model(spec: ModelSpec, tokenizer: Tokenizer, model_config: ModelConfig | None = None, *,
                    dtype: torch.dtype | None = None) -> Model:
    """The model of ``spec`` loaded strictly (LoRA on top, unmerged), in eval mode, at ``dtype`` (default:
    the spec's) on the spec's device.

    ``model_config`` overrides the one at ``spec.config_path`` (inference flags may change model keys). The
    vocabulary size is the config's when it sets one, else the tokenizer's; a config with fewer rows than the
    tokenizer has pieces is an error (those ids would index past the embedding).
    """
    if model_config is None:
        model_config = model_config_of(spec)
    vocab_size = None
    if model_config is not None:
        if model_config.vocab_size is None:
            vocab_size = tokenizer.vocab_size
        elif model_config.vocab_size < tokenizer.vocab_size:
            raise ConfigError(f"vocabulary size mismatch: the config says vocab_size={model_config.vocab_size}, "
                              f"the tokenizer has {tokenizer.vocab_size} pieces; pass the model's own tokenizer")
    if spec.load_model_path is None:
        logger.warning("no --load_model_path: a randomly initialised model")
    model = load_model(model_config, spec.load_model_path, vocab_size=vocab_size, lora_path=spec.lora_path,
                       dtype=dtype or spec.torch_dtype())
    return model.to(spec.torch_device())


def load_model_for_inference(spec: ModelSpec, tokenizer: Tokenizer, model_config: ModelConfig | None = None) -> Model:
    """The spec's model ready for generation: loaded in fp32, LoRA merged, cast to the spec's dtype, then either
    quantized (``spec.quantization``) or given the fast inference kernels. For inference only (no training)."""
    model = load_spec_model(spec, tokenizer, model_config, dtype=torch.float32)
    if spec.lora_path:
        merge_lora_(model)  # in fp32, before any cast
    dtype = spec.torch_dtype()
    if spec.quantization and spec.torch_device().type == "cpu" and dtype != torch.float32:
        logger.warning("quantized CPU kernels take fp32 activations: ignoring --fp16/--bf16")
        dtype = torch.float32
    model = model.to(dtype=dtype).eval()
    if spec.quantization:
        quantize_model(model, spec.quantization, group_size=spec.int4_group_size)
    else:
        optimize_for_inference(model)
    return model
