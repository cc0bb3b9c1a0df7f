"""LoRA as a transform applied to a built model.

``apply_lora`` swaps the chosen ``nn.Linear`` modules for ``LoraLinear``, a subclass, so the base weight keeps
its key (``...linear_layers.0.weight``) and the new parameters are ``...lora_A`` / ``...lora_B``, the key
names of the original framework. Under grouped-query attention K and V are narrower than Q; every LoRA
pair takes its shape from the layer it wraps, so that case needs nothing special.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.errors import ConfigError
from tencentpretrain.layers.dropout import Dropout

DEFAULT_TARGET_MODULES = ("linear_layers.0", "linear_layers.2")  # Q and V, as the original


@dataclass(frozen=True)
class LoraConfig:
    """Rank, scale and placement of the LoRA adapters."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES  # module-name suffixes to adapt

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"lora_r must be positive, got {self.r}")


class LoraLinear(nn.Linear):
    """``x W^T + b + dropout(x) A^T B^T * alpha / r`` with W frozen; A (r, in) kaiming-uniform, B (out, r) zero."""

    def __init__(self, in_features: int, out_features: int, *, r: int, alpha: float, dropout: float,
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.r = r
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(out_features, r, device=device, dtype=dtype))
        self.lora_dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()
        self.weight.requires_grad_(False)

    @classmethod
    def wrap(cls, linear: nn.Linear, config: LoraConfig) -> LoraLinear:
        """A LoraLinear around ``linear``'s own weight and bias Parameter objects (moved, not copied).

        Reusing the Parameter objects keeps whatever the base layer carries: under DeepSpeed ZeRO-3 they are
        partitioned placeholders with their partition attributes, and no full-size copy is ever allocated.
        """
        weight = linear.weight
        lora = cls(linear.in_features, linear.out_features, r=config.r, alpha=config.alpha, dropout=config.dropout,
                   bias=linear.bias is not None, device="meta", dtype=weight.dtype)
        lora.weight = weight
        if linear.bias is not None:
            lora.bias = linear.bias
        lora.lora_A = nn.Parameter(torch.empty(config.r, linear.in_features, device=weight.device, dtype=weight.dtype))
        lora.lora_B = nn.Parameter(torch.empty(linear.out_features, config.r, device=weight.device, dtype=weight.dtype))
        lora.reset_lora_parameters()
        weight.requires_grad_(False)
        return lora

    def reset_lora_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        return out + (self.lora_dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into the base weight (W += B A * scaling); forward then skips the adapter."""
        if not self.merged:
            self.weight += (self.lora_B @ self.lora_A * self.scaling).to(self.weight.dtype)
            self.merged = True


def apply_lora(model: nn.Module, config: LoraConfig) -> list[str]:
    """Replace every ``nn.Linear`` whose name ends with one of ``config.target_modules``; return their names.

    The base weights are moved, not copied, into the new modules; everything but LoRA parameters is frozen.
    """
    replaced = []
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and name.endswith(config.target_modules):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, LoraLinear.wrap(module, config))
            replaced.append(name)
    if not replaced:
        raise ConfigError(f"LoRA target modules {config.target_modules} match no linear layer of the model")
    mark_only_lora_as_trainable(model)
    return replaced


def mark_only_lora_as_trainable(model: nn.Module) -> None:
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors (keys containing ``lora_``), as the original's LoRA files hold."""
    module = getattr(model, "module", model)
    return {k: v for k, v in module.state_dict().items() if "lora_" in k}


def merge_lora_(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight in place, then turn the LoraLinear modules back into nn.Linear."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLinear):
            module.merge()
            plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                              device="meta")
            plain.weight = nn.Parameter(module.weight.data, requires_grad=True)
            if module.bias is not None:
                plain.bias = nn.Parameter(module.bias.data, requires_grad=True)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, plain)
    return model
