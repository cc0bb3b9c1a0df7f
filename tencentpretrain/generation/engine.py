"""The decode loop shared by every front end: prefill, decode steps, stops, and rows that join and leave.

``Engine`` owns one ``SlotKVCache``. ``add`` prefills new requests (together, left-padded, in a separate cache)
and copies them into free rows; ``step`` decodes one token for every active row. Rows are independent: each has
its own positions, sampling settings, random generator, detokenizer and stop rules, so a request produces the
same tokens alone or batched. Batch-file generation, the chat REPL and the server's continuous-batching scheduler
all drive this one class.
"""

from __future__ import annotations

import bisect
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tencentpretrain.errors import ConfigError
from tencentpretrain.generation.cache import SlotKVCache
from tencentpretrain.generation.detokenizer import IncrementalDetokenizer, StopStringFilter
from tencentpretrain.generation.sampling import SamplingParams, TokenLogprob, sample_next, token_logprobs
from tencentpretrain.models.model import Model
from tencentpretrain.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GenerationConfig:
    """What to generate for one request."""

    max_new_tokens: int = 128  # new tokens at most (not a total-length budget, unlike the original seq_length);
    # 0 generates nothing: the prompt is only read (to score it with prompt_logprobs)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_strings: tuple[str, ...] = ()  # the text is cut before the first of these and generation stops
    stop_ids: tuple[int, ...] = ()  # token ids that end generation (not part of the output)
    stop_at_eos: bool = True  # the tokenizer's eos ends generation
    logprobs: int | None = None  # None: no logprobs; n: each new token's logprob and the n most likely tokens'
    prompt_logprobs: bool = False  # also the prompt tokens' logprobs (the first has none), with as many top tokens

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.logprobs is not None and self.logprobs < 0:
            raise ConfigError(f"logprobs must be >= 0 (the number of most likely tokens), got {self.logprobs}")


@dataclass(eq=False)
class Request:
    """One prompt being generated: its settings, its output so far and the text not yet handed out."""

    prompt_ids: list[int]
    config: GenerationConfig
    output_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (eos, stop id or stop string), "length", "cancelled", "error"
    pending_text: str = ""  # released text the caller has not taken yet
    text: str = ""  # all released text
    cancelled: bool = False
    generator: torch.Generator | None = None
    detokenizer: IncrementalDetokenizer | None = None
    stop_filter: StopStringFilter | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of output_ids, when config.logprobs is set
    stop_logprob: TokenLogprob | None = None  # of the eos or stop id that ended generation (not in output_ids)
    prompt_logprobs: list[TokenLogprob | None] | None = None  # of prompt_ids (None first), with prompt_logprobs
    logprobs_taken: int = 0  # entries of ``logprobs`` handed out by ``take_logprobs``
    token_starts: list[int] = field(default_factory=list)  # with logprobs: where each output token's text starts

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def take_text(self) -> str:
        """The text released since the last call."""
        out, self.pending_text = self.pending_text, ""
        return out

    def take_logprobs(self) -> list[TokenLogprob]:
        """The logprobs of the output tokens whose text was released since the last call (text held back for
        a possible stop string holds back its tokens' logprobs; tokens cut with a stop string never come)."""
        end = len(self.logprobs)
        cut = self.stop_filter is not None and self.stop_filter.stopped
        if self.token_starts and (cut or not self.finished):
            end = bisect.bisect_left(self.token_starts, len(self.text), hi=end)
        out = self.logprobs[self.logprobs_taken : end]
        self.logprobs_taken = max(end, self.logprobs_taken)
        return out

    def _release(self, text: str) -> None:
        self.pending_text += text
        self.text += text


class Engine:
    """Continuous-batching generation over one model.

    Args:
        model: a Model in eval mode (possibly quantized).
        tokenizer: used for eos and to detokenize; None gives ids only (no text, no stop strings).
        max_batch_size: rows decoded together.
        max_length: KV slots per row, the context limit of prompt + output (default: config.max_seq_length).
    """

    def __init__(
        self, model: Model, tokenizer: Tokenizer | None, *, max_batch_size: int = 8, max_length: int | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_id if tokenizer is not None else None
        self.max_length = max_length or model.config.max_seq_length
        param = next(model.parameters())
        c = model.config
        self.cache = SlotKVCache(
            layers_num=c.layers_num, batch_size=max_batch_size, kv_heads_num=c.kv_heads_num,
            head_size=c.head_size, max_length=self.max_length, dtype=_activation_dtype(model), device=param.device,
        )
        self.device = param.device
        self.rows: list[Request] = []

    @property
    def free_rows(self) -> int:
        return self.cache.free_rows

    def new_request(self, prompt_ids: Sequence[int], config: GenerationConfig) -> Request:
        """A Request with its generator, detokenizer and stop filter; validates the prompt length."""
        check_prompt(prompt_ids, self.max_length)
        vocab = self.model.vocab_size
        if any(not 0 <= i < vocab for i in prompt_ids):
            raise ConfigError(f"prompt token ids must be in [0, {vocab}): the model has {vocab} tokens")
        needed = len(prompt_ids) + config.max_new_tokens - 1
        if needed > self.max_length:
            logger.debug("prompt %d + max_new_tokens %d exceed the context %d: output will be cut",
                         len(prompt_ids), config.max_new_tokens, self.max_length)
        seed = config.sampling.seed if config.sampling.seed is not None else secrets.randbits(63)
        request = Request(list(prompt_ids), config, generator=torch.Generator().manual_seed(seed))
        if self.tokenizer is not None:
            request.detokenizer = IncrementalDetokenizer(self.tokenizer)
            request.stop_filter = StopStringFilter(config.stop_strings)
        return request

    # -------------------------------------------------------------------------------------------- prefill
    @torch.inference_mode()
    def add(self, requests: Sequence[Request]) -> list[Request]:
        """Prefill ``requests`` together and give each its first token; return them (some may be finished)."""
        if len(requests) > self.free_rows:
            raise ValueError(f"{len(requests)} requests but only {self.free_rows} free rows")
        if not requests:
            return []
        src, seg, positions = left_pad([r.prompt_ids for r in requests], self.device)  # (m, P) each
        prefill_cache = self.model.new_kv_cache(len(requests), src.shape[1], dtype=self.cache.keys[0].dtype)
        if any(r.config.prompt_logprobs for r in requests):  # every position is scored, not only the last
            hidden = self.model.hidden_states(src, seg, positions=positions, cache=prefill_cache)  # (m, P, H)
            _score_prompts(self.model, requests, src, hidden)
            logits = self.model.target.logits(hidden[:, -1:])  # (m, 1, V)
        else:
            logits = self.model.logits(src, seg, positions=positions, cache=prefill_cache, last_only=True)
        self.cache.insert(prefill_cache)
        self.rows.extend(requests)
        self._accept(requests, logits[:, -1])
        return list(requests)

    # -------------------------------------------------------------------------------------------- decode
    @torch.inference_mode()
    def step(self) -> list[Request]:
        """Decode one token for every active row; return the rows that advanced (finished ones are removed)."""
        for request in [r for r in self.rows if r.cancelled]:
            self._finish(request, "cancelled")
        for request in [r for r in self.rows if len(r.prompt_ids) + len(r.output_ids) > self.max_length]:
            self._finish(request, "length")
        if not self.rows:
            return []
        if not self.cache.make_room(1):
            raise RuntimeError("KV cache cannot make room although every row fits: this is a bug")
        rows = list(self.rows)
        last = torch.tensor([[r.output_ids[-1]] for r in rows], device=self.device)  # (n, 1)
        positions = torch.tensor([[len(r.prompt_ids) + len(r.output_ids) - 1] for r in rows], device=self.device)
        logits = self.model.logits(last, positions=positions, cache=self.cache)  # (n, 1, V)
        self._accept(rows, logits[:, -1])
        return rows

    def cancel(self, request: Request) -> None:
        """Stop ``request`` at the next step (safe to call from another thread)."""
        request.cancelled = True

    # -------------------------------------------------------------------------------------------- internals
    def _accept(self, requests: Sequence[Request], logits: torch.Tensor) -> None:
        """Sample the next token of ``requests`` from ``logits`` (n, V) and apply the stop rules.

        A request whose sampling fails ends with finish reason "error"; the other rows go on. (The batch is
        sampled at once; only when that fails is it sampled again row by row, to find the row at fault.)
        """
        live = [i for i, r in enumerate(requests) if r.config.max_new_tokens > 0]
        for request in [r for r in requests if r.config.max_new_tokens == 0]:
            self._finish(request, "length")  # only the prompt was wanted (scoring)
        if not live:
            return
        if len(live) < len(requests):
            requests, logits = [requests[i] for i in live], logits[live]
        states = _generator_states(requests)
        try:
            picks = _pick(requests, logits)
        except Exception:
            logger.exception("sampling %d rows failed; sampling them one by one", len(requests))
            for generator, state in states:  # rows drawn before the failure draw again: the same numbers
                generator.set_state(state)
            picks = [_pick_or_none(request, logits[i : i + 1]) for i, request in enumerate(requests)]
        for request, pick in zip(requests, picks):
            if pick is None:
                self._finish(request, "error")
            else:
                self._append(request, *pick)

    def _append(self, request: Request, token: int, logprob: TokenLogprob | None = None) -> None:
        config = request.config
        if (config.stop_at_eos and token == self.eos_id) or token in config.stop_ids:
            request.stop_logprob = logprob
            self._finish(request, "stop")
            return
        request.output_ids.append(token)
        if logprob is not None:
            request.logprobs.append(logprob)
            if request.detokenizer is not None:
                request.token_starts.append(len(request.detokenizer.text))
        if request.detokenizer is not None:
            released = request.stop_filter.feed(request.detokenizer.push(token))
            request._release(released)
            if request.stop_filter.stopped:
                self._finish(request, "stop")
                return
        if len(request.output_ids) >= config.max_new_tokens:
            self._finish(request, "length")

    def _finish(self, request: Request, reason: str) -> None:
        request.finish_reason = reason
        if request.detokenizer is not None and not request.stop_filter.stopped:
            request._release(request.stop_filter.feed(request.detokenizer.flush()))
            request._release(request.stop_filter.finish())
        row = self.rows.index(request)
        moved = self.cache.remove(row)
        if moved is not None:
            self.rows[row] = self.rows[moved]
        self.rows.pop()


def _pick(requests: Sequence[Request], logits: torch.Tensor) -> list[tuple[int, TokenLogprob | None]]:
    """The next token of each request from ``logits`` (n, V), with its logprob where the request wants it."""
    tokens = sample_next(
        logits,
        [r.config.sampling for r in requests],
        [r.prompt_ids + r.output_ids for r in requests],
        [r.generator for r in requests],
    )  # (n,)
    logprobs: list[TokenLogprob | None] = [None] * len(requests)
    wanted = [i for i, r in enumerate(requests) if r.config.logprobs is not None]
    if wanted:
        top_n = max(requests[i].config.logprobs for i in wanted)
        entries = token_logprobs(logits[wanted], tokens[wanted], top_n)
        for i, entry in zip(wanted, entries):
            logprobs[i] = _keep_top(entry, requests[i].config.logprobs)
    return list(zip(tokens.tolist(), logprobs))


def _generator_states(requests: Sequence[Request]) -> list[tuple[torch.Generator, torch.Tensor]]:
    """The random state of every sampling row, to rewind them when a batched draw fails halfway."""
    return [(r.generator, r.generator.get_state()) for r in requests
            if not r.config.sampling.greedy and isinstance(r.generator, torch.Generator)]


def _pick_or_none(request: Request, logits: torch.Tensor) -> tuple[int, TokenLogprob | None] | None:
    """``_pick`` of one request (logits (1, V)); None, logged, when it fails."""
    try:
        return _pick([request], logits)[0]
    except Exception:
        logger.exception("sampling failed for one request (prompt of %d tokens); it ends with an error",
                         len(request.prompt_ids))
        return None


def _keep_top(entry: TokenLogprob, top_n: int) -> TokenLogprob:
    return entry if len(entry.top) <= top_n else TokenLogprob(entry.token_id, entry.logprob, entry.top[:top_n])


SCORE_CHUNK = 256  # prompt positions turned into vocabulary logits at once (memory: chunk x vocab floats)


def _score_prompts(model: Model, requests: Sequence[Request], src: torch.Tensor, hidden: torch.Tensor) -> None:
    """Fill ``prompt_logprobs`` of the requests that want it, from the prefill's left-padded ``src`` (m, P) and
    final ``hidden`` states (m, P, H): token t of a prompt is scored by the logits at position t - 1. Logits are
    made a chunk of positions at a time, never (P, V) for a whole batch."""
    width = src.shape[1]
    for i, request in enumerate(requests):
        if not request.config.prompt_logprobs:
            continue
        scored: list[TokenLogprob | None] = [None]
        for start in range(width - len(request.prompt_ids), width - 1, SCORE_CHUNK):  # from the row's first token
            end = min(start + SCORE_CHUNK, width - 1)
            logits = model.target.logits(hidden[i : i + 1, start:end])[0]  # (chunk, V)
            scored += token_logprobs(logits, src[i, start + 1 : end + 1], request.config.logprobs or 0)
        request.prompt_logprobs = scored


def check_prompt(prompt_ids: Sequence[int], max_length: int) -> None:
    """A prompt the engine can take: at least one token, and no more than ``max_length``."""
    if not prompt_ids:
        raise ConfigError("the prompt is empty: give at least one token")
    if len(prompt_ids) > max_length:
        raise ConfigError(f"the prompt has {len(prompt_ids)} tokens, more than the context of {max_length}")


def left_pad(prompts: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Left-padded ids, segment ids (0 = padding) and per-row positions, each (B, P)."""
    width = max(len(p) for p in prompts)
    src = torch.zeros(len(prompts), width, dtype=torch.long)
    seg = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        src[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        seg[i, width - len(prompt) :] = 1
    positions = (seg.cumsum(1) - 1).clamp(min=0)
    return src.to(device), seg.to(device), positions.to(device)


def _activation_dtype(model: Model) -> torch.dtype:
    """The dtype of the model's activations: that of its floating-point parameters (fp32 if none)."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32
