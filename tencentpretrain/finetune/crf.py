"""A linear-chain conditional random field over tag sequences, for ``run_ner.py --crf_target``.

Parameter names, shapes, initialisation and semantics are those of the ``pytorch-crf`` package (``torchcrf.CRF``,
which the original's NER tagger held as ``self.crf`` with ``batch_first=True``), so a model the original fine-tuned
with ``--crf_target`` loads here strictly, and ours loads there:

* ``start_transitions`` (K,): score of a sequence starting with each tag;
* ``end_transitions`` (K,): score of a sequence ending with each tag;
* ``transitions`` (K, K): ``transitions[i, j]`` is the score of tag ``j`` following tag ``i``.

The score of a tag path ``y`` of length ``n`` is ``start[y_0] + sum_t emissions[t, y_t] + sum_{t>0}
transitions[y_{t-1}, y_t] + end[y_{n-1}]``; its log-likelihood is that score minus the log-sum-exp over all paths
(the forward algorithm). Inputs are batch-first; ``mask`` (B, T) marks each sequence's real positions, which must
be a prefix (left-aligned, at least one position).
"""

from __future__ import annotations

import torch
from torch import nn

REDUCTIONS = ("none", "sum", "mean", "token_mean")


class CRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags (``torchcrf.CRF(num_tags, batch_first=True)``'s keys)."""

    def __init__(self, num_tags: int) -> None:
        if num_tags <= 0:
            raise ValueError(f"a CRF needs at least one tag, got num_tags={num_tags}")
        super().__init__()
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in [-0.1, 0.1], as torchcrf initialises."""
        for parameter in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.uniform_(parameter, -0.1, 0.1)

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None,
                reduction: str = "sum") -> torch.Tensor:
        """Log-likelihood of ``tags`` (B, T) given ``emissions`` (B, T, K) over the positions of ``mask`` (B, T).

        ``reduction``: ``none`` (B,), ``sum`` / ``mean`` over the batch, or ``token_mean`` (sum / real tokens).
        """
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        mask = self._checked_mask(emissions, mask)
        if tags.shape != emissions.shape[:2]:
            raise ValueError(f"tags {tuple(tags.shape)} do not match emissions {tuple(emissions.shape[:2])}")
        emissions = emissions.float()
        llh = self._path_score(emissions, tags, mask) - self.log_partition(emissions, mask)  # (B,)
        if reduction == "none":
            return llh
        if reduction == "sum":
            return llh.sum()
        if reduction == "mean":
            return llh.mean()
        return llh.sum() / mask.sum()

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """log Z (B,): the log-sum-exp of the scores of all tag paths over each sequence's real positions."""
        mask = self._checked_mask(emissions, mask)
        emissions = emissions.float()
        alpha = self.start_transitions + emissions[:, 0]  # (B, K): log-sum of the paths ending in each tag
        for t in range(1, emissions.shape[1]):
            # (B, K_prev, 1) + (K_prev, K) + (B, 1, K) -> sum out the previous tag
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + self.end_transitions, dim=1)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> list[list[int]]:
        """The highest-scoring tag path of each sequence (Viterbi), as lists as long as its real positions."""
        mask = self._checked_mask(emissions, mask)
        emissions = emissions.float()
        score = self.start_transitions + emissions[:, 0]  # (B, K): best path ending in each tag
        backpointers = []  # per step t >= 1: (B, K) the best previous tag of each tag
        for t in range(1, emissions.shape[1]):
            step, best_previous = (score.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1)).max(dim=1)
            score = torch.where(mask[:, t].unsqueeze(1), step, score)
            backpointers.append(best_previous)
        score = score + self.end_transitions
        lengths = mask.sum(dim=1).tolist()
        last_tags = score.argmax(dim=1).tolist()
        history = torch.stack(backpointers, dim=1).tolist() if backpointers else [[] for _ in lengths]  # (B, T-1, K)
        paths = []
        for row, (length, tag) in enumerate(zip(lengths, last_tags)):
            path = [tag]
            for t in range(length - 2, -1, -1):  # history[row][t] leads from step t + 1 back to step t
                path.append(history[row][t][path[-1]])
            path.reverse()
            paths.append(path)
        return paths

    def _path_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Score (B,) of the given tag paths; tags at masked positions do not count."""
        weights = mask.float()
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        score = self.start_transitions[tags[:, 0]] + (emitted * weights).sum(dim=1)
        score = score + (self.transitions[tags[:, :-1], tags[:, 1:]] * weights[:, 1:]).sum(dim=1)
        last = mask.sum(dim=1) - 1  # (B,)
        return score + self.end_transitions[tags.gather(1, last.unsqueeze(1)).squeeze(1)]

    def _checked_mask(self, emissions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``mask`` as bool (B, T), all true when None; refuses shapes and masks the recursions cannot honour."""
        if emissions.dim() != 3 or emissions.shape[2] != self.num_tags:
            raise ValueError(f"emissions must be (batch, length, {self.num_tags}), got {tuple(emissions.shape)}")
        if emissions.shape[1] == 0:
            raise ValueError("a CRF needs sequences of at least one position")
        if mask is None:
            return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match emissions {tuple(emissions.shape[:2])}")
        mask = mask.bool()
        if not mask[:, 0].all():
            raise ValueError("every sequence needs its first position in the mask (no empty sequences)")
        if (mask[:, 1:] & ~mask[:, :-1]).any():
            raise ValueError("the mask must mark a prefix of each sequence (padding only at the end)")
        return mask
