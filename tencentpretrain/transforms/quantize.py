"""Inference-time transforms that swap modules of a loaded model: faster fp32 linears, int8 and int4 weights.

Kernels were chosen by measurement on a 2-core AVX512 CPU (docs/inference.md has the numbers):

* fp32 (``optimize_for_inference``): oneDNN's matmul on a weight reordered once into its blocked layout
  (``PackedLinear``; the kernel that torch.compile's CPU freezing uses). For LLaMA-sized matrices it is 1.4-1.7x
  faster than MKL's ``x @ W.T`` for one row and 2.5-4x faster for 2-8 rows (batched decoding) and for prefill,
  where MKL's time grows almost linearly with the rows. For one row through a small matrix (under ``2**20``
  entries) oneDNN's fixed cost per call (about 9 us) loses to MKL's matrix-vector product on ``W.T`` stored
  contiguous, so small weights also keep that layout for one-row calls. Without oneDNN, every linear keeps
  ``W.T`` contiguous (``TransposedLinear``), 2-3x faster than ``F.linear(x, W)`` for one row.
* ``--use_int8`` (``quantize_model(model, "int8")``): weights int8, one scale per output channel (symmetric).
  On CPU the matmul is fbgemm's dynamic int8 linear (activations quantized per call); ``torch._weight_int8pack_mm``
  measured 5x slower than fp32 there. Elsewhere (GPU) the weight is dequantized to the activation dtype in the
  forward: torch-native, 4x smaller in memory.
* ``--use_int4`` (``quantize_model(model, "int4")``): weights int4, asymmetric, one scale and zero point per group
  of ``group_size`` input channels. On CPU the matmul is ``torch._weight_int4pack_mm_for_cpu`` with bf16
  activations (fp32 activations make that kernel far slower); elsewhere the packed nibbles are dequantized in the
  forward.

The word embedding is quantized too (int8 per row, or int4 per group), because at small sizes it is a large share
of the weights. Norm weights and biases stay in floating point. Quantized models are for inference only.
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from tencentpretrain.errors import ConfigError
from tencentpretrain.layers.attention import MultiHeadedAttention
from tencentpretrain.layers.gated_feed_forward import GatedFeedForward

logger = logging.getLogger(__name__)

QuantMode = Literal["int8", "int4"]
INT4_GROUP_SIZES = (32, 64, 128, 256)


# ------------------------------------------------------------------------------------------ quantization math
def quantize_int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: (N, K) float -> (int8 (N, K), fp32 scales (N,)); w ~= q * scale."""
    scale = weight.float().abs().amax(dim=1).clamp(min=1e-8) / 127.0
    q = (weight.float() / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_int4_groupwise(
    weight: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per group of ``group_size`` input channels.

    Returns (q (N, K) uint8 in [0, 15], scales (N, G), mins (N, G)) fp32, with w ~= q * scale + min.
    """
    rows, cols = weight.shape
    if cols % group_size:
        raise ConfigError(f"int4: input width {cols} is not a multiple of the group size {group_size}")
    groups = weight.float().reshape(rows, cols // group_size, group_size)  # (N, G, gs)
    low, high = groups.amin(-1), groups.amax(-1)  # (N, G)
    scale = ((high - low) / 15).clamp(min=1e-8)
    q = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.uint8)
    return q.reshape(rows, cols), scale, low


def _pad_columns(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """Zero columns appended so the input width is a multiple of ``group_size`` (the input is padded alike)."""
    extra = -weight.shape[1] % group_size
    return F.pad(weight, (0, extra)) if extra else weight


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(N, K) values in [0, 15] -> (N, K / 2) uint8, two per byte (even column in the low nibble)."""
    return (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pack_nibbles``: (N, K / 2) uint8 -> (N, K) uint8."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten(-2)


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, low: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, K / 2) nibbles with (N, G) scales and mins -> (N, K) weights in ``dtype``."""
    q = unpack_nibbles(packed)
    rows, groups = scale.shape
    w = q.reshape(rows, groups, -1).to(dtype) * scale[..., None].to(dtype) + low[..., None].to(dtype)
    return w.reshape(rows, -1)


# ------------------------------------------------------------------------------------------ modules
class TransposedLinear(nn.Module):
    """A Linear whose weight is stored as ``W.T`` contiguous (K, N): ``x @ Wt`` is the fast CPU kernel."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        out = x @ self.weight_t
        return out if self.bias is None else out + self.bias


class PackedLinear(nn.Module):
    """An fp32 Linear (CPU) whose weight is held in oneDNN's blocked layout; see the module docstring.

    The packed weight is an opaque oneDNN tensor, kept as a plain attribute (not a parameter or buffer): it has
    no storage that ``state_dict``, ``deepcopy`` or ``.to()`` could handle. A PackedLinear is for inference on
    CPU only; save the model before packing it.
    """

    PLAIN_COPY_MAX_ENTRIES = 2**20  # below this, one-row inputs use MKL on W.T (faster), at 4 MiB at most

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight)
        self.weight_t = weight.t().contiguous() if weight.numel() < self.PLAIN_COPY_MAX_ENTRIES else None
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        if self.weight_t is not None and x.numel() == self.in_features:  # one row
            out = x @ self.weight_t
            return out if self.bias is None else out + self.bias
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed_weight, self.bias, "none", [], "")

    def memory_bytes(self) -> int:
        """Bytes of the weight copies (the packed one is about the size of the plain weight)."""
        entries = self.in_features * self.out_features
        return 4 * entries * (1 if self.weight_t is None else 2)


class Int8Linear(nn.Module):
    """int8 weight (N, K) + per-row scale; dequantized in the forward (the device-agnostic path)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        q, scale = quantize_int8_per_channel(linear.weight.detach())
        self.register_buffer("weight_int8", q)
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        return F.linear(x, self.weight_int8.to(x.dtype)) * self.scale.to(x.dtype) + (
            0 if self.bias is None else self.bias
        )


def fbgemm_int8_linear(linear: nn.Linear) -> nn.Module:
    """fbgemm's dynamic int8 linear (CPU) with our per-channel int8 weights."""
    q, scale = quantize_int8_per_channel(linear.weight.detach())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qweight = torch._make_per_channel_quantized_tensor(
            q, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0
        )
        module = FbgemmInt8Linear(linear.in_features, linear.out_features, bias_=linear.bias is not None,
                                  dtype=torch.qint8)
        module.set_weight_bias(qweight, None if linear.bias is None else linear.bias.detach().float())
    return module


class FbgemmInt8Linear(DynamicLinear):
    """torch's dynamic int8 Linear, calling the fbgemm op directly: the stock forward's dtype and version checks
    cost a few us per call, a sixth of the whole call for a 256x256 matrix and one row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) fp32 -> (..., N) fp32
        return torch.ops.quantized.linear_dynamic.default(x, self._packed_params._packed_params, True)


class Int4Linear(nn.Module):
    """int4 group-wise weight (packed nibbles) dequantized in the forward (the device-agnostic path)."""

    def __init__(self, linear: nn.Linear, group_size: int) -> None:
        super().__init__()
        self.in_features = linear.in_features
        q, scale, low = quantize_int4_groupwise(_pad_columns(linear.weight.detach(), group_size), group_size)
        dtype = linear.weight.dtype
        self.register_buffer("weight_packed", pack_nibbles(q))
        self.register_buffer("scale", scale.to(_scale_dtype(dtype)))
        self.register_buffer("low", low.to(_scale_dtype(dtype)))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        weight = dequantize_int4(self.weight_packed, self.scale, self.low, x.dtype)[:, : self.in_features]
        return F.linear(x, weight, self.bias)


class Int4LinearCPU(nn.Module):
    """int4 group-wise weight in the layout of ``torch._weight_int4pack_mm_for_cpu`` (bf16 activations).

    The kernel needs the output width to be a multiple of 16: extra zero rows are added and cut off again.
    """

    def __init__(self, linear: nn.Linear, group_size: int) -> None:
        super().__init__()
        weight = _pad_columns(linear.weight.detach().float(), group_size)
        self.out_features, self.group_size = weight.shape[0], group_size
        self.in_features, self.padded_in = linear.in_features, weight.shape[1]
        padded = -(-weight.shape[0] // 16) * 16
        weight = F.pad(weight, (0, 0, 0, padded - weight.shape[0]))
        q, scale, low = quantize_int4_groupwise(weight, group_size)
        # The kernel computes (q - 8) * scale + zero, so its zero point is the group minimum plus 8 steps.
        zero = low + 8 * scale
        self.register_buffer("weight_packed", torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1))
        scales_zeros = torch.stack((scale, zero), dim=-1).transpose(0, 1).contiguous()  # (G, N, 2)
        self.register_buffer("scales_zeros", scales_zeros.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)  # (M, K)
        if self.padded_in != self.in_features:
            flat = F.pad(flat, (0, self.padded_in - self.in_features))
        out = torch._weight_int4pack_mm_for_cpu(flat, self.weight_packed, self.group_size, self.scales_zeros)
        out = out[:, : self.out_features].to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias


class QuantizedEmbedding(nn.Module):
    """An embedding table stored int8 per row or int4 per group; rows are dequantized on lookup."""

    def __init__(self, embedding: nn.Embedding, mode: QuantMode, group_size: int) -> None:
        super().__init__()
        weight = embedding.weight.detach()
        self.mode, self.dtype = mode, weight.dtype
        if mode == "int8":
            q, scale = quantize_int8_per_channel(weight)
            self.register_buffer("weight_q", q)
            self.register_buffer("scale", scale.to(weight.dtype))
        else:
            q, scale, low = quantize_int4_groupwise(weight, group_size)
            self.register_buffer("weight_q", pack_nibbles(q))
            self.register_buffer("scale", scale.to(_scale_dtype(weight.dtype)))
            self.register_buffer("low", low.to(_scale_dtype(weight.dtype)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, E)
        flat = ids.reshape(-1)
        if self.mode == "int8":
            rows = self.weight_q[flat].to(self.dtype) * self.scale[flat, None]
        else:
            rows = dequantize_int4(self.weight_q[flat], self.scale[flat], self.low[flat], self.dtype)
        return rows.reshape(*ids.shape, -1)


# ------------------------------------------------------------------------------------------ transforms
def optimize_for_inference(model: nn.Module) -> nn.Module:
    """Fuse the projections that share an input (``fuse_projections_``), then, on CPU, give every fp32 Linear
    the fastest measured kernel: ``PackedLinear`` (oneDNN) where torch has oneDNN, else ``TransposedLinear``.

    LoRA adapters must be merged first (``merge_lora_``). The model is changed in place and returned; it is for
    inference only (packed weights are not in its ``state_dict``).
    """
    _check_lora_merged(model)
    fuse_projections_(model)
    if _device(model).type != "cpu":
        return model
    fast = PackedLinear if _onednn_available() else TransposedLinear
    _swap_linears(model, lambda linear: fast(linear) if linear.weight.dtype == torch.float32 else linear)
    return model


def quantize_model(model: nn.Module, mode: QuantMode, *, group_size: int = 32) -> nn.Module:
    """Quantize the weights of every Linear (LM head included) and of word embeddings, in place.

    The kernels depend on the model's device (see the module docstring): quantize after moving the model.
    """
    if mode not in ("int8", "int4"):
        raise ConfigError(f"unknown quantization {mode!r}: choose int8 or int4")
    if mode == "int4" and group_size not in INT4_GROUP_SIZES:
        raise ConfigError(f"int4 group size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    _check_lora_merged(model)
    fuse_projections_(model)
    on_cpu = _device(model).type == "cpu"
    if mode == "int8":
        make = fbgemm_int8_linear if on_cpu and _fbgemm_available() else Int8Linear
    else:
        make = (lambda lin: Int4LinearCPU(lin, group_size)) if on_cpu else (lambda lin: Int4Linear(lin, group_size))
    _swap_linears(model, make)
    _swap_embeddings(model, mode, group_size)
    logger.info("quantized to %s: %.1f MiB of weights", mode, weight_memory_bytes(model) / 2**20)
    return model


def weight_memory_bytes(model: nn.Module) -> int:
    """Bytes held by the model's weights: parameters, buffers and fbgemm's packed int8 weights."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen and tensor.dtype != torch.long:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    for module in model.modules():
        if isinstance(module, PackedLinear):
            total += module.memory_bytes()
        if isinstance(module, DynamicLinear):
            qweight, bias = module._weight_bias()
            total += qweight.numel() + qweight.q_per_channel_scales().numel() * 4  # int8 + fp32 scale per row
            total += 0 if bias is None else bias.numel() * bias.element_size()
    return total


def fuse_projections_(model: nn.Module) -> nn.Module:
    """Stack the linears that read the same input: Q, K and V of every self-attention (``fuse_qkv_``), gate and
    up of every gated feed-forward (``fuse_gate_up_``). Fewer, larger matrix products per decode step: 4 instead
    of 7 per LLaMA layer. Exact (the same products, concatenated); inference only (parameter names change)."""
    for module in list(model.modules()):
        attention = getattr(module, "self_attn", None)  # cross-attention (T5's context_attn) reads another input
        if isinstance(attention, MultiHeadedAttention) and attention.qkv is None:
            attention.fuse_qkv_()
        if isinstance(module, GatedFeedForward) and module.gate_up is None:
            module.fuse_gate_up_()
    return model


def _check_lora_merged(model: nn.Module) -> None:
    if any(hasattr(module, "lora_A") for module in model.modules()):
        raise ConfigError("merge LoRA adapters (merge_lora_) before quantizing or optimizing")


def _swap_linears(model: nn.Module, make) -> None:
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, make(child))


def _swap_embeddings(model: nn.Module, mode: QuantMode, group_size: int) -> None:
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Embedding) and child.embedding_dim % (group_size if mode == "int4" else 1) == 0:
                setattr(module, child_name, QuantizedEmbedding(child, mode, group_size))


def _scale_dtype(dtype: torch.dtype) -> torch.dtype:
    """int4 group scales and minimums are kept in 16 bits (fp16 unless the model is bf16)."""
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float16


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def _fbgemm_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines

