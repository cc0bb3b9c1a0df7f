"""Encoder-decoder generation (T5 and other ``decoder`` models): encode once, decode with a KV cache.

``generate_seq2seq`` runs the encoder over the source, then feeds the decoder one token at a time through
its self-attention cache, stopping each row at ``eos_id``. Sampling is greedy with ``temperature == 0``,
otherwise top-k / top-p over the temperature-scaled distribution. ``beam_search_seq2seq`` keeps ``width``
hypotheses per source and reorders the cache rows after them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tencentpretrain.errors import ConfigError
from tencentpretrain.models.model import Model


def _next_token(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = logits.sort(-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > top_p  # keep the first token above p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_seq2seq(
    model: Model,
    src: torch.Tensor,
    *,
    seg: torch.Tensor | None = None,
    start_id: int,
    eos_id: int | None,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generated target ids (B, <= max_new_tokens), without the start token; rows that ended are padded
    with ``eos_id``.

    Args:
        src: (B, S) source ids; seg: (B, S) source segment ids, 0 = padding (default: none).
        start_id: the decoder's first input (T5: the pad id 0).
    """
    seg = torch.ones_like(src) if seg is None else seg
    memory = model.hidden_states(src, seg)  # (B, S, H)
    cache = model.new_decoder_kv_cache(src.shape[0], max_new_tokens + 1)
    token = torch.full((src.shape[0], 1), start_id, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    out = []
    for _ in range(max_new_tokens):
        logits = model.target.logits(model.decode(memory, seg, token, cache=cache))[:, -1]  # (B, V)
        nxt = _next_token(logits, temperature, top_k, top_p, generator)
        if eos_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            done |= nxt == eos_id
        out.append(nxt)
        token = nxt[:, None]
        if eos_id is not None and bool(done.all()):
            break
    return torch.stack(out, 1) if out else token[:, :0]


@dataclass(frozen=True, kw_only=True)
class BeamOptions:
    """Beam search settings, with transformers' meaning (``generate(num_beams=..., length_penalty=...,
    early_stopping=...)``): a finished hypothesis scores ``sum log p / generated_length ** length_penalty``."""

    width: int  # beams kept per source
    length_penalty: float = 1.0  # > 0 favours longer outputs, < 0 shorter ones
    early_stopping: bool | str = False  # True: stop at ``width`` finished; False: a heuristic; "never": exact

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ConfigError(f"--beam_width must be >= 1, got {self.width}")
        if self.early_stopping not in (True, False, "never"):
            raise ConfigError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")


NEG = -1.0e9  # the score of an impossible hypothesis (transformers uses the same constant)


class _Finished:
    """The best ``width`` finished hypotheses: (width, max_new_tokens) ids padded with -1, their scores."""

    def __init__(self, width: int, max_new_tokens: int, device: torch.device) -> None:
        self.ids = torch.full((width, max_new_tokens), -1, dtype=torch.long, device=device)
        self.scores = torch.full((width,), NEG, device=device)
        self.filled = torch.zeros(width, dtype=torch.bool, device=device)

    def merge(self, candidates: torch.Tensor, scores: torch.Tensor, ended: torch.Tensor) -> None:
        """Keep the best of the current ones and ``candidates`` (2W, T) with ``scores`` (2W,) where ``ended``."""
        padded = torch.full((candidates.shape[0], self.ids.shape[1]), -1, dtype=torch.long, device=self.ids.device)
        padded[:, : candidates.shape[1]] = candidates
        scores = scores + (~ended) * NEG
        best = torch.cat([self.scores, scores]).topk(self.scores.shape[0]).indices  # old ones first on ties
        self.ids = torch.cat([self.ids, padded])[best]
        self.scores = torch.cat([self.scores, scores])[best]
        self.filled = torch.cat([self.filled, ended])[best]

    def best(self) -> list[int]:
        row = self.ids[0]
        return row[row >= 0].tolist()


@torch.no_grad()
def beam_search_seq2seq(
    model: Model,
    src: torch.Tensor,
    *,
    seg: torch.Tensor | None = None,
    start_id: int,
    eos_id: int | None,
    max_new_tokens: int,
    options: BeamOptions,
) -> list[int]:
    """The best hypothesis (generated ids, eos included when it ended with it) for one source ``src`` (1, S).

    It follows transformers' beam search step for step (2 * width candidates per step, those ending in eos or at
    the length limit compete for the finished slots, the rest continue), so equal logits give equal output ids.
    """
    width = options.width
    seg = torch.ones_like(src) if seg is None else seg
    memory = model.hidden_states(src, seg).expand(width, -1, -1)  # (W, S, H)
    seg = seg.expand(width, -1)  # (W, S)
    cache = model.new_decoder_kv_cache(width, max_new_tokens + 1)
    running = torch.full((width, 1), start_id, dtype=torch.long, device=src.device)  # start + generated
    running_scores = torch.full((width,), NEG, device=src.device)
    running_scores[0] = 0.0  # all beams start equal: only the first may expand at step 0
    finished = _Finished(width, max_new_tokens, src.device)
    improvable = True
    for step in range(max_new_tokens):
        logits = model.target.logits(model.decode(memory, seg, running[:, -1:], cache=cache))[:, -1]  # (W, V)
        vocab = logits.shape[-1]
        scores = (logits.float().log_softmax(-1) + running_scores[:, None]).reshape(-1)  # (W * V,)
        top_scores, top_index = scores.topk(2 * width)
        beam, token = top_index // vocab, top_index % vocab
        candidates = torch.cat([running[beam], token[:, None]], 1)  # (2W, step + 2)
        ended = torch.full_like(token, step + 1 == max_new_tokens, dtype=torch.bool)
        if eos_id is not None:
            ended |= token == eos_id
        live_scores = top_scores + ended.float() * NEG
        live = live_scores.topk(width).indices
        running, running_scores = candidates[live], live_scores[live]
        in_top_width = torch.arange(2 * width, device=src.device) < width
        normalized = top_scores / ((step + 1) ** options.length_penalty)
        closed = (bool(finished.filled.all()) and options.early_stopping is True) or not improvable
        if not closed:
            finished.merge(candidates[:, 1:], normalized, ended & in_top_width)
        cache.select_rows(beam[live])
        improvable = improvable and _may_improve(running_scores, finished, step + 1, max_new_tokens, options)
        if not improvable or (bool(finished.filled.all()) and options.early_stopping is True) or bool(ended.all()):
            break
    return finished.best()


def _may_improve(running_scores: torch.Tensor, finished: _Finished, generated: int, max_new_tokens: int,
                 options: BeamOptions) -> bool:
    """Whether the best live beam could still beat the worst finished one (transformers' stopping heuristic)."""
    if not bool(finished.filled.all()):
        return True
    length = max_new_tokens if options.early_stopping == "never" and options.length_penalty > 0 else generated
    best_possible = running_scores[0] / (length ** options.length_penalty)
    return bool(best_possible > finished.scores.min())
