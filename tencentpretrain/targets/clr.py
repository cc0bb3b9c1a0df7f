"""Contrastive target (config ``target: ["clr"]``) of two-stream models: the original's CLIP / SBERT objective.

Each stream's hidden states are pooled (the stream's ``pooling``), optionally projected to ``feature_size``
(``projection: true``) and L2-normalised; the logits are the scaled cosine similarities of every stream-0 item
with every stream-1 item of the batch, and item i of one stream is the right answer for item i of the other.
The loss is the mean of the cross-entropies in both directions. Under torch.distributed the features of all
ranks are gathered first (the local ones keep their gradient), so every rank contrasts against the whole batch;
the gradient reaches each rank's own features only (the original's rule; tests/core/test_clr_distributed.py).

State keys: ``target.clr.logit_scale`` (scalar, log of the inverse temperature, starts at log(1/0.07)) and, with
projection, ``target.clr.encoder_{0,1}_projection`` (H_i, feature_size).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.layers.pooling import pool
from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.output import TargetOutput

INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
Pair = tuple[torch.Tensor, torch.Tensor]


def gather_with_local_gradient(features: torch.Tensor) -> torch.Tensor:
    """(B, F) of this rank -> (world * B, F) of all ranks, this rank's rows keeping their gradient."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    gathered = [torch.zeros_like(features) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, features.contiguous())
    gathered[dist.get_rank()] = features
    return torch.cat(gathered, dim=0)


@TARGETS.register("clr")
class ClrTarget(nn.Module):
    """Symmetric InfoNCE over the batch between the two streams' pooled features."""

    labels = None  # the batch itself is the supervision: item i of each stream pairs with item i of the other
    reads_two_streams = True

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.poolings = tuple(stream.pooling for stream in config.streams)
        self.logit_scale = nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE))
        self.projection = config.projection
        if config.projection:
            if config.feature_size is None:
                raise ConfigError("target clr with projection: true needs feature_size")
            for i, stream in enumerate(config.streams):
                table = nn.Parameter(torch.empty(stream.hidden_size, config.feature_size))
                self.register_parameter(f"encoder_{i}_projection", table)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.logit_scale.fill_(INITIAL_LOGIT_SCALE)
            if self.projection:
                nn.init.normal_(self.encoder_0_projection, std=0.02)
                nn.init.normal_(self.encoder_1_projection, std=0.02)

    def features(self, stream: int, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, H), valid (B, T) -> unit vectors (B, H or feature_size)."""
        pooled = pool(hidden, valid, self.poolings[stream])
        if self.projection:
            pooled = pooled @ getattr(self, f"encoder_{stream}_projection")
        return pooled / pooled.norm(dim=-1, keepdim=True)

    def forward(self, hidden: Pair, tgt: object, loss_mask: Pair) -> TargetOutput:
        """hidden: the streams' (B, T_i, H_i); loss_mask: their real tokens (B, T_i); ``tgt`` is not read."""
        first = gather_with_local_gradient(self.features(0, hidden[0], loss_mask[0]).float())  # (N, F)
        second = gather_with_local_gradient(self.features(1, hidden[1], loss_mask[1]).float())  # (N, F)
        logits = self.logit_scale.exp() * first @ second.T  # (N, N): row i = item i of stream 0
        answers = torch.arange(logits.shape[0], device=logits.device)
        loss = (F.cross_entropy(logits, answers) + F.cross_entropy(logits.T, answers)) / 2
        correct = (logits.argmax(-1) == answers).sum()
        instances = torch.tensor(logits.shape[0], device=logits.device)
        return TargetOutput(loss, {"loss_clr": loss.detach(), "correct_clr": correct.detach(),
                                   "instances_clr": instances})
