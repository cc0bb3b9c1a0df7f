"""Classification target (config ``target: ["cls"]``): the original's text and image (ViT) classifier.

The pooled hidden state (``pooling``: first/last/mean/max) goes through ``tanh(linear_1(.))`` and ``linear_2``
to ``labels_num`` classes. State keys ``target.cls.linear_1.*``, ``target.cls.linear_2.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.layers.pooling import pool
from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.output import LABELS_CLASS, TargetOutput


def require_labels_num(config: ModelConfig, target: str) -> int:
    if not config.labels_num or config.labels_num < 2:
        raise ConfigError(f"target {target!r} needs labels_num >= 2 in the config or --labels_num, got {config.labels_num}")
    return config.labels_num


def classification_output(logits: torch.Tensor, tgt: torch.Tensor, name: str) -> TargetOutput:
    """Cross-entropy of (B, C) logits against (B,) labels, with accuracy counts."""
    logits = logits.float()
    loss = F.cross_entropy(logits, tgt)
    correct = (logits.argmax(-1) == tgt).sum()
    instances = torch.tensor(tgt.shape[0], device=tgt.device)
    return TargetOutput(
        loss, {f"loss_{name}": loss.detach(), f"correct_{name}": correct.detach(), f"instances_{name}": instances}
    )


@TARGETS.register("cls")
class ClsTarget(nn.Module):
    """Pooled hidden state -> tanh(linear_1) -> linear_2 -> labels_num logits."""

    labels = LABELS_CLASS

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.pooling = config.pooling
        self.linear_1 = nn.Linear(config.hidden_size, config.hidden_size)
        self.linear_2 = nn.Linear(config.hidden_size, require_labels_num(config, "cls"))

    def logits(self, hidden: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B, C) of hidden (B, T, H); ``valid`` (B, T) marks real tokens for mean/max/last."""
        return self.linear_2(torch.tanh(self.linear_1(pool(hidden, valid, self.pooling))))

    def forward(self, hidden: torch.Tensor, tgt: torch.Tensor, loss_mask: torch.Tensor) -> TargetOutput:
        """tgt: (B,) class ids; loss_mask: (B, T) real tokens (used by mean/max/last pooling)."""
        return classification_output(self.logits(hidden, loss_mask), tgt, "cls")
