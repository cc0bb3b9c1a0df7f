"""What every target returns, what a target may read of the targets before it, and the kinds of labels.

A target class declares its capabilities as class attributes, so that nothing else keys on its registered name
(``tencentpretrain.models.capabilities`` reads them):

* ``labels``: the kind of labels it scores (one of the ``LABELS_*`` below; ``None`` when it reads none of its
  own, e.g. an auxiliary loss on another target's logits). Data processors accept the targets whose kind they
  produce.
* ``vocabulary_rows``: its parameters whose first dimension is the vocabulary (resized and frozen with the word
  embedding). A target that has them produces vocabulary logits with ``logits(hidden)``.
* ``ties_to_word_embedding``: its parameters that are the word embedding when the config sets ``tie_weights``.
* ``reads_earlier_targets``: when True, ``forward`` also gets ``earlier``, a dict {name: ``EarlierTarget``} of
  the targets listed before it in the config.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

LABELS_NEXT_TOKENS = "next-token labels"  # tgt (B, T): the token after each position
LABELS_BIDIRECTIONAL_TOKENS = "forward and backward next-token labels"  # tgt (B, T, 2): see targets.bilm
LABELS_MASKED_TOKENS = "masked-token labels"  # tgt (B, T): the original token at each masked position
LABELS_SENTENCE_PAIR = "sentence-pair labels"  # tgt (B,): is the second segment the real continuation
LABELS_CLASS = "class labels"  # tgt (B,): a class id per instance


class TargetOutput(NamedTuple):
    """A scalar training loss and detached tensors a report can show (no host sync happens here)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


class EarlierTarget:
    """A target computed before the one reading it: its module, its output, and its logits on demand."""

    def __init__(self, module: nn.Module, output: TargetOutput, hidden: torch.Tensor, loss_mask: torch.Tensor) -> None:
        self.module, self.output = module, output
        self.hidden = hidden  # (B, T, H): what the target read
        self.loss_mask = loss_mask  # (B, T) bool: the positions it scored
        self._logits: torch.Tensor | None = None

    def logits(self) -> torch.Tensor:
        """(N, V) logits of the N scored positions (``hidden[loss_mask]``), computed once and kept.

        They are computed again here rather than kept by the target, whose fused loss never materialises them;
        gradients flow through them into the target's parameters.
        """
        if self._logits is None:
            self._logits = self.module.logits(self.hidden[self.loss_mask])
        return self._logits
