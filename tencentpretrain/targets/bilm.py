"""Bidirectional language-model target (config ``target: ["bilm"]``): the original's ELMo-style objective.

The encoder's output is read as two halves, ``[forward | backward]`` (what ``bilstm``/``birnn``/``bigru`` produce):
the first ``hidden_size // 2`` features predict the next token, the others the previous one, through one shared
output layer of width ``hidden_size // 2``. The loss is the sum of the two mean cross-entropies, as the original's
trainer added them. State key: ``target.bilm.output_layer.weight`` (V, H / 2) (and ``.bias`` with
``has_lmtarget_bias``), the original's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.output import LABELS_BIDIRECTIONAL, TargetOutput


@TARGETS.register("bilm")
class BilmTarget(nn.Module):
    """Forward and backward next-token cross-entropy over the two halves of the hidden state.

    Capabilities: bidirectional labels (``tgt`` (B, T, 2): [..., 0] the next token, [..., 1] the previous one),
    vocabulary rows in ``output_layer``.
    """

    labels = LABELS_BIDIRECTIONAL
    vocabulary_rows = ("output_layer.weight", "output_layer.bias")

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        if config.hidden_size % 2:
            raise ConfigError(f"target 'bilm' splits the hidden state into a forward and a backward half: "
                              f"hidden_size must be even, got {config.hidden_size}")
        self.half = config.hidden_size // 2
        self.output_layer = nn.Linear(self.half, vocab_size, bias=config.has_lmtarget_bias)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Forward-direction logits: (..., H) -> (..., V)."""
        return self.output_layer(hidden[..., : self.half])

    def forward(self, hidden: torch.Tensor, tgt: torch.Tensor, loss_mask: torch.Tensor) -> TargetOutput:
        """hidden (B, T, H); tgt (B, T, 2) next and previous token ids; loss_mask (B, T) real tokens."""
        kept = hidden[loss_mask]  # (N, H)
        labels = tgt[loss_mask]  # (N, 2)
        forward_logits = self.output_layer(kept[:, : self.half]).float()  # (N, V)
        backward_logits = self.output_layer(kept[:, self.half :]).float()  # (N, V)
        if labels.shape[0] == 0:  # keep the graph connected so every rank runs the same backward
            zero = (forward_logits.sum() + backward_logits.sum()) * 0.0
            loss_forward = loss_backward = zero
        else:
            loss_forward = F.cross_entropy(forward_logits, labels[:, 0])
            loss_backward = F.cross_entropy(backward_logits, labels[:, 1])
        correct_forward = (forward_logits.argmax(-1) == labels[:, 0]).sum()
        correct_backward = (backward_logits.argmax(-1) == labels[:, 1]).sum()
        metrics = {
            "loss_forward": loss_forward.detach(), "loss_backward": loss_backward.detach(),
            "correct_forward": correct_forward.detach(), "correct_backward": correct_backward.detach(),
            "tokens_bilm": loss_mask.sum().detach(),
        }
        return TargetOutput(loss_forward + loss_backward, metrics)
