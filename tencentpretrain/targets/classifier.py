"""Linear classification head (config ``target: ["classifier"]``), the head of HF ``ViTForImageClassification``.

Unlike the original's ``cls`` target there is no tanh pooler: the pooled hidden state goes through one
``linear`` layer to ``labels_num`` logits, which is what HF's image classifiers (and models fine-tuned with
them) compute. State keys ``target.classifier.linear.{weight,bias}`` (HF ``classifier.*``).
"""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.layers.pooling import pool
from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.cls import classification_output, require_labels_num
from tencentpretrain.targets.output import LABELS_CLASS, TargetOutput


@TARGETS.register("classifier")
class LinearClassifierTarget(nn.Module):
    """Pooled hidden state -> linear -> labels_num logits."""

    labels = LABELS_CLASS

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.pooling = config.pooling
        self.linear = nn.Linear(config.hidden_size, require_labels_num(config, "classifier"))

    def logits(self, hidden: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B, C) of hidden (B, T, H)."""
        return self.linear(pool(hidden, valid, self.pooling))

    def forward(self, hidden: torch.Tensor, tgt: torch.Tensor, loss_mask: torch.Tensor) -> TargetOutput:
        """tgt: (B,) class ids."""
        return classification_output(self.logits(hidden, loss_mask), tgt, "classifier")
