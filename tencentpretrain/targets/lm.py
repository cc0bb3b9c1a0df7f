"""Language-model target (config ``target: ["lm"]``): next-token cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.layers.linear_cross_entropy import linear_cross_entropy
from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.output import LABELS_NEXT_TOKENS, TargetOutput


@TARGETS.register("lm")
class LmTarget(nn.Module):
    """Projects hidden states to the vocabulary. State key: ``target.lm.output_layer.weight`` (V, H).

    Capabilities: it scores next-token labels, its output layer has one row per vocabulary piece (so it
    produces vocabulary logits), and with ``tie_weights`` that layer's weight is the word embedding.
    """

    labels = LABELS_NEXT_TOKENS
    vocabulary_rows = ("output_layer.weight", "output_layer.bias")
    ties_to_word_embedding = ("output_layer.weight",)

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.label_smoothing = config.label_smoothing
        self.output_layer = nn.Linear(config.hidden_size, vocab_size, bias=config.has_lmtarget_bias)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., V)."""
        return self.output_layer(hidden)

    def forward(self, hidden: torch.Tensor, tgt: torch.Tensor, loss_mask: torch.Tensor) -> TargetOutput:
        """Mean cross-entropy over the positions where ``loss_mask`` (B, T) is True.

        Only those positions go through the output layer, which saves the vocabulary projection of
        padding and prompt tokens.
        """
        kept = hidden[loss_mask]  # (N, H)
        labels = tgt[loss_mask]  # (N,)
        tokens = loss_mask.sum()
        if kept.shape[0] == 0:  # keeps the graph connected so every rank runs the same backward
            loss = self.output_layer(kept).sum() * 0.0
        elif self._can_fuse():
            loss = linear_cross_entropy(kept, self.output_layer.weight, labels, bias=self.output_layer.bias)
        else:
            logits = self.output_layer(kept).float()  # (N, V)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return TargetOutput(loss, {"loss_lm": loss.detach(), "tokens_lm": tokens.detach()})

    def _can_fuse(self) -> bool:
        """The fused projection + loss reads the weight and bias directly, so it needs a plain Linear whose
        weight is materialised (not a LoRA-wrapped or quantized layer, not a ZeRO-3 partition)."""
        layer = self.output_layer
        return (
            type(layer) is nn.Linear
            and self.label_smoothing == 0.0
            and not hasattr(layer.weight, "ds_id")
        )
