"""Choosing the next token: small pure functions over logits, plus the typed sampling settings.

Order of the pipeline (HF's, not the original's): repetition penalty on raw logits, then temperature, then top-k,
then top-p, then one draw. ``temperature == 0`` means greedy (argmax after the penalty); the original treated 0
as 1. Every row of a batch has its own settings and its own random generator, so a request gets the same tokens
whether it runs alone or batched with others.
"""

from __future__ import annotations

import array
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tencentpretrain.errors import ConfigError

SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes 64-bit seeds


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How one request picks its tokens. Defaults are greedy decoding with no penalty."""

    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    top_p: float = 1.0  # nucleus: smallest set whose probability reaches p; 1 = off
    repetition_penalty: float = 1.0  # > 1 discourages tokens seen in the last `repetition_penalty_range` tokens
    repetition_penalty_range: int = 1024  # how many recent tokens (prompt included) the penalty looks at; 0 = all
    repetition_penalty_slope: float = 0.0  # 0 = flat; > 0 ramps the penalty up towards recent tokens (sigmoid)
    seed: int | None = None  # None = a fresh random seed per request

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty", "repetition_penalty_slope"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        for name in ("top_k", "repetition_penalty_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if self.repetition_penalty_range < 0 or self.repetition_penalty_slope < 0:
            raise ConfigError("repetition_penalty_range and repetition_penalty_slope must be >= 0")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < SEED_LIMIT):
            raise ConfigError(f"seed must be an integer in [0, 2^64), got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def repetition_weights(length: int, penalty: float, slope: float) -> torch.Tensor:
    """Penalty of each of the last ``length`` tokens (oldest first), shape (length,).

    With ``slope == 0`` every token gets ``penalty``. Otherwise the penalty rises along a sigmoid from 1 for the
    oldest token to ``penalty`` for the newest (the NovelAI/KoboldAI "advanced" form the original offered).
    """
    if slope == 0 or length < 2:
        return torch.full((length,), float(penalty))
    x = torch.linspace(-1.0, 1.0, length)
    ramp = slope * x / (1 + (x.abs() * (slope - 1)))  # in [-1, 1], steeper with larger slope
    return 1 + (ramp + 1) / 2 * (penalty - 1)


def apply_repetition_penalties(
    logits: torch.Tensor, histories: Sequence[Sequence[int]], params: Sequence[SamplingParams]
) -> torch.Tensor:
    """Penalise, in every row of ``logits`` (B, V), the tokens of that row's recent history: a positive logit
    is divided by the penalty, a non-positive one multiplied, so a penalty > 1 always makes a token less likely.

    Only the last ``repetition_penalty_range`` tokens of a row's history count (0 = all); a token seen several
    times takes the penalty of its most recent occurrence. Only the penalised entries are read and written (a
    gather and a scatter over the histories, for the whole batch at once), so the cost grows with the history,
    not with the vocabulary. Returns a new tensor, or ``logits`` itself when no row has anything to penalise.
    """
    recents = [_penalised_window(h, p) for h, p in zip(histories, params)]
    width = max(len(r) for r in recents)
    if width == 0:
        return logits
    # Rows are left-padded to `width` by repeating their first token with its weight: a duplicate that writes
    # the same value. A row with no history gets token 0 with weight 1, which writes the logit back unchanged.
    ids = array.array("q")
    weights: array.array | None = None if all(p.repetition_penalty_slope == 0 for p in params) else array.array("d")
    for recent, p in zip(recents, params):
        pad = width - len(recent)
        ids.extend(itertools.repeat(recent[0] if recent else 0, pad))
        ids.extend(recent)
        if weights is not None:
            row = _latest_occurrence_weights(recent, p) if recent else []
            weights.extend(itertools.repeat(row[0] if row else 1.0, pad))
            weights.extend(row)
    ids_t = torch.frombuffer(ids, dtype=torch.long).view(len(recents), width).to(logits.device)  # (B, W)
    if weights is None:  # flat penalties: one per row
        w = torch.tensor([p.repetition_penalty if r else 1.0 for r, p in zip(recents, params)])[:, None]  # (B, 1)
    else:
        w = torch.frombuffer(weights, dtype=torch.float64).view(len(recents), width)  # (B, W)
    w = w.to(logits.device, logits.dtype)
    values = logits.gather(1, ids_t)  # (B, W)
    return logits.scatter(1, ids_t, torch.where(values > 0, values / w, values * w))


def _penalised_window(history: Sequence[int], params: SamplingParams) -> list[int]:
    if params.repetition_penalty == 1.0:
        return []
    window = params.repetition_penalty_range
    return list(history[-window:]) if window > 0 else list(history)


def _latest_occurrence_weights(recent: list[int], params: SamplingParams) -> list[float]:
    """The ramped penalty of each position of ``recent``, every occurrence of a token taking the weight of its
    most recent one (so duplicates in a scatter agree)."""
    ramp = repetition_weights(len(recent), params.repetition_penalty, params.repetition_penalty_slope).tolist()
    latest = {token: i for i, token in enumerate(recent)}
    return [ramp[latest[token]] for token in recent]


def apply_repetition_penalty(
    logits: torch.Tensor, history: Sequence[int], penalty: float, window: int, slope: float = 0.0
) -> torch.Tensor:
    """One row's ``apply_repetition_penalties``: ``logits`` (V,), the row's history and its penalty settings."""
    if penalty == 1.0 or not history:
        return logits
    params = SamplingParams(repetition_penalty=penalty, repetition_penalty_range=window,
                            repetition_penalty_slope=slope)
    return apply_repetition_penalties(logits[None], [history], [params])[0]


def filter_sorted(sorted_logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) the tokens that top-k and top-p drop, on logits sorted in descending order.

    Args:
        sorted_logits: (B, K) logits, already divided by the temperature, descending along K.
        top_k: (B,) tokens to keep (values >= K keep all).
        top_p: (B,) nucleus mass (1 keeps all). The most likely token is always kept.
    Returns:
        (B, K) logits with dropped positions set to -inf.
    """
    rank = torch.arange(sorted_logits.shape[1], device=sorted_logits.device)  # (K,)
    logits = sorted_logits.masked_fill(rank[None, :] >= top_k[:, None], float("-inf"))
    probs = logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # (B, K): probability of the more likely tokens
    drop = (mass_before >= top_p[:, None]) & (rank[None, :] > 0)
    return logits.masked_fill(drop, float("-inf"))


def draw(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: (B, K) probabilities and (B,) uniforms in [0, 1) -> (B,) indices into K."""
    cdf = probs.cumsum(-1)  # (B, K)
    target = uniforms[:, None].to(cdf.dtype) * cdf[:, -1:]
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)  # (B,)
    return index.clamp(max=probs.shape[1] - 1)


def sample_next(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    histories: Sequence[Sequence[int]],
    generators: Sequence[torch.Generator | None],
) -> torch.Tensor:
    """The next token of every row.

    Args:
        logits: (B, V) next-token logits.
        params: one SamplingParams per row.
        histories: per row, the ids the repetition penalty looks at (prompt + generated so far).
        generators: per row, the CPU generator that draws its uniform (None: the global RNG).
    Returns:
        (B,) token ids (long, on the logits' device).
    """
    logits = logits.float()
    logits = apply_repetition_penalties(logits, histories, params)  # (B, V)
    chosen = logits.argmax(-1)  # (B,) greedy answer, kept for temperature-0 rows
    sampled_rows = [i for i, p in enumerate(params) if not p.greedy]
    if not sampled_rows:
        return chosen
    chosen[sampled_rows] = _sample_rows(logits[sampled_rows], [params[i] for i in sampled_rows],
                                        [generators[i] for i in sampled_rows])
    return chosen


def _sample_rows(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    """Temperature, top-k, top-p and a draw for rows that sample: (B, V) -> (B,)."""
    vocab = logits.shape[1]
    device = logits.device
    temperature = torch.tensor([p.temperature for p in params], device=device)
    logits = logits / temperature[:, None]
    top_k = torch.tensor([p.top_k if 0 < p.top_k < vocab else vocab for p in params], device=device)  # any k fits
    top_p = torch.tensor([p.top_p for p in params], device=device)
    widest = int(top_k.max())
    if widest < vocab:  # every row keeps at most `widest` tokens: topk is much cheaper than a full sort
        values, indices = logits.topk(widest, dim=-1)
    elif bool((top_p < 1).any()):
        values, indices = logits.sort(dim=-1, descending=True)
    else:
        values, indices = logits, None
    if indices is not None:
        values = filter_sorted(values, top_k, top_p)
    uniforms = torch.stack([torch.rand((), generator=g) for g in generators])  # (B,) one draw per row's own RNG
    picked = draw(values.softmax(-1), uniforms.to(device))
    if indices is None:
        return picked
    return indices.gather(1, picked[:, None]).squeeze(1)


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability under the model: the log-softmax of its raw logits (before the repetition
    penalty, temperature, top-k and top-p), as ``transformers`` gives for the same weights. ``top`` holds the
    most likely tokens of that position, most likely first, as (id, logprob)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, top_n: int) -> list[TokenLogprob]:
    """The logprob of ``token_ids`` (N,) under ``logits`` (N, V), each with its position's ``top_n`` most
    likely tokens."""
    logp = logits.float().log_softmax(-1)  # (N, V)
    chosen = logp.gather(1, token_ids[:, None].to(logp.device)).squeeze(1).tolist()  # (N,)
    if top_n <= 0:
        return [TokenLogprob(int(t), lp) for t, lp in zip(token_ids.tolist(), chosen)]
    values, indices = logp.topk(min(top_n, logp.shape[1]), dim=-1)  # (N, top_n) each
    return [TokenLogprob(int(t), lp, tuple(zip(ids, vals)))
            for t, lp, ids, vals in zip(token_ids.tolist(), chosen, indices.tolist(), values.tolist())]
