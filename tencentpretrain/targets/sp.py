"""Sentence-pair target (config ``target: [..., "sp"]``): BERT's next-sentence / ALBERT's sentence-order task.

The first token's hidden state goes through ``tanh(linear_1(.))`` (BERT's pooler) and ``linear_2`` to two
classes. State keys: ``target.sp.linear_1.*`` (HF ``bert.pooler.dense``), ``target.sp.linear_2.*``
(HF ``cls.seq_relationship``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.output import LABELS_SENTENCE_PAIR, TargetOutput


@TARGETS.register("sp")
class SpTarget(nn.Module):
    """Two-way classification of the sentence pair from the first ([CLS]) position."""

    labels = LABELS_SENTENCE_PAIR

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(config.hidden_size, config.hidden_size)
        self.linear_2 = nn.Linear(config.hidden_size, 2)

    def pair_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, 2)."""
        return self.linear_2(torch.tanh(self.linear_1(hidden[:, 0])))

    def forward(self, hidden: torch.Tensor, tgt: torch.Tensor, loss_mask: torch.Tensor) -> TargetOutput:
        """tgt: (B,) labels (1 = the second sentence follows the first, 0 = random or swapped)."""
        logits = self.pair_logits(hidden).float()
        loss = F.cross_entropy(logits, tgt)
        correct = (logits.argmax(-1) == tgt).sum()
        instances = torch.tensor(tgt.shape[0], device=tgt.device)
        return TargetOutput(loss, {"loss_sp": loss.detach(), "correct_sp": correct.detach(), "instances_sp": instances})
