"""Bidirectional language-model target (config ``target: ["bilm"]``), with the ``birnn``/``bilstm``/``bigru``
encoders: the first half of each hidden state predicts the next token, the second half the previous one.

One output layer of ``hidden_size / 2`` inputs serves both directions (the original's). The loss is the sum of
the two directions' mean cross-entropies over the scored positions, as the original's trainer added them.
State key ``target.bilm.output_layer.weight`` (V, H/2) (and ``.bias`` with ``has_lmtarget_bias``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.output import LABELS_BIDIRECTIONAL_TOKENS, TargetOutput


@TARGETS.register("bilm")
class BilmTarget(nn.Module):
    """Forward and backward next-token cross-entropy from the two halves of the hidden state."""

    labels = LABELS_BIDIRECTIONAL_TOKENS
    vocabulary_rows = ("output_layer.weight", "output_layer.bias")
    ties_to_word_embedding = ("output_layer.weight",)

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        if config.hidden_size % 2:
            raise ConfigError(f"target 'bilm' splits hidden_size in two directions: it must be even, "
                              f"got {config.hidden_size}")
        self.half = config.hidden_size // 2
        self.label_smoothing = config.label_smoothing
        self.output_layer = nn.Linear(self.half, vocab_size, bias=config.has_lmtarget_bias)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits (..., V) of the forward half of hidden (..., H)."""
        return self.output_layer(hidden[..., : self.half])

    def _direction(self, hidden: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.output_layer(hidden[loss_mask]).float()  # (N, V)
        wanted = labels[loss_mask]
        loss = F.cross_entropy(logits, wanted, label_smoothing=self.label_smoothing)
        return loss, (logits.argmax(-1) == wanted).sum()

    def forward(self, hidden: torch.Tensor, tgt: tuple[torch.Tensor, torch.Tensor] | torch.Tensor,
                loss_mask: torch.Tensor) -> TargetOutput:
        """hidden (B, T, H); tgt: (B, T, 2) as the ``bilm`` processor's batches hold it ([..., 0] the next token,
        [..., 1] the previous one), or the pair (forward labels, backward labels) of (B, T) each."""
        if isinstance(tgt, torch.Tensor):
            forward_labels, backward_labels = tgt[..., 0], tgt[..., 1]
        else:
            forward_labels, backward_labels = tgt
        loss_forward, correct_forward = self._direction(hidden[..., : self.half], forward_labels, loss_mask)
        loss_backward, correct_backward = self._direction(hidden[..., self.half :], backward_labels, loss_mask)
        loss = loss_forward + loss_backward
        return TargetOutput(loss, {
            "loss_bilm": loss.detach(), "loss_forward_bilm": loss_forward.detach(),
            "loss_backward_bilm": loss_backward.detach(), "correct_forward_bilm": correct_forward.detach(),
            "correct_backward_bilm": correct_backward.detach(), "tokens_bilm": loss_mask.sum().detach(),
        })
