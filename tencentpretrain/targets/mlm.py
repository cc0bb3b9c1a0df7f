"""Masked language-model target (config ``target: ["mlm", ...]``): BERT's and RoBERTa's objective.

``linear_2(layer_norm(act(linear_1(h))))`` predicts the original token at the masked positions. State keys:
``target.mlm.linear_1.*``, ``target.mlm.layer_norm.{gamma,beta}``, ``target.mlm.linear_2.*``; with
``tie_weights`` ``linear_2.weight`` is the word embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.layers.standard_layer_norm import affine_layernorm_name
from tencentpretrain.registry import ACTIVATIONS, LAYERNORMS, TARGETS
from tencentpretrain.targets.output import LABELS_MASKED_TOKENS, TargetOutput


@TARGETS.register("mlm")
class MlmTarget(nn.Module):
    """Scores the positions where ``loss_mask`` is True (the masked ones); ``tgt`` holds their original ids.

    Capabilities: masked-token labels, vocabulary rows in ``linear_2``, tied to the word embedding.
    """

    labels = LABELS_MASKED_TOKENS
    vocabulary_rows = ("linear_2.weight", "linear_2.bias")
    ties_to_word_embedding = ("linear_2.weight",)

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        # ALBERT's factorized embeddings predict in the (smaller) embedding width, as in the original.
        width = config.emb_size if config.factorized_embedding_parameterization else config.hidden_size
        self.linear_1 = nn.Linear(config.hidden_size, width)
        self.act = ACTIVATIONS.get(config.hidden_act)
        self.layer_norm = LAYERNORMS.get(affine_layernorm_name(config.layernorm))(width, eps=config.layernorm_eps)
        self.linear_2 = nn.Linear(width, vocab_size)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., V)."""
        return self.linear_2(self.layer_norm(self.act(self.linear_1(hidden))))

    def forward(self, hidden: torch.Tensor, tgt: torch.Tensor, loss_mask: torch.Tensor) -> TargetOutput:
        """Mean cross-entropy over masked positions.

        Args:
            hidden: (B, T, H). tgt: (B, T) original token ids. loss_mask: (B, T) bool, True = masked position.
        """
        logits = self.logits(hidden[loss_mask]).float()  # (N, V): only masked positions are projected
        labels = tgt[loss_mask]  # (N,)
        if labels.numel() == 0:
            loss = logits.sum() * 0.0  # keep the graph connected so every rank runs the same backward
        else:
            loss = F.cross_entropy(logits, labels)
        correct = (logits.argmax(-1) == labels).sum()
        metrics = {"loss_mlm": loss.detach(), "correct_mlm": correct.detach(), "tokens_mlm": loss_mask.sum().detach()}
        return TargetOutput(loss, metrics)
