"""The decode loop shared by every front end: prefill, decode steps, stops, and rows that join and leave.

``Engine`` owns one ``SlotKVCache``. ``add`` prefills new requests (together, left-padded, in a separate cache)
and copies them into free rows; ``step`` decodes one token for every active row. Rows are independent: each has
its own positions, sampling settings, random generator, detokenizer and stop rules, so a request produces the
same tokens alone or batched. Batch-file generation, the chat REPL and the server's continuous-batching scheduler
all drive this one class.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tencentpretrain.errors import ConfigError
from tencentpretrain.generation.cache import SlotKVCache
from tencentpretrain.generation.detokenizer import IncrementalDetokenizer, StopStringFilter
from tencentpretrain.generation.sampling import SamplingParams, sample_next
from tencentpretrain.models.model import Model
from tencentpretrain.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GenerationConfig:
    """What to generate for one request."""

    max_new_tokens: int = 128  # new tokens at most (not a total-length budget, unlike the original seq_length)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_strings: tuple[str, ...] = ()  # the text is cut before the first of these and generation stops
    stop_ids: tuple[int, ...] = ()  # token ids that end generation (not part of the output)
    stop_at_eos: bool = True  # the tokenizer's eos ends generation

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(eq=False)
class Request:
    """One prompt being generated: its settings, its output so far and the text not yet handed out."""

    prompt_ids: list[int]
    config: GenerationConfig
    output_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (eos, stop id or stop string), "length", "cancelled"
    pending_text: str = ""  # released text the caller has not taken yet
    text: str = ""  # all released text
    cancelled: bool = False
    generator: torch.Generator | None = None
    detokenizer: IncrementalDetokenizer | None = None
    stop_filter: StopStringFilter | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def take_text(self) -> str:
        """The text released since the last call."""
        out, self.pending_text = self.pending_text, ""
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
        logits = self.model.logits(src, seg, positions=positions, cache=prefill_cache, last_only=True)  # (m, 1, V)
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
        """Sample the next token of ``requests`` from ``logits`` (n, V) and apply the stop rules."""
        tokens = sample_next(
            logits,
            [r.config.sampling for r in requests],
            [r.prompt_ids + r.output_ids for r in requests],
            [r.generator for r in requests],
        ).tolist()
        for request, token in zip(requests, tokens):
            self._append(request, token)

    def _append(self, request: Request, token: int) -> None:
        config = request.config
        if (config.stop_at_eos and token == self.eos_id) or token in config.stop_ids:
            self._finish(request, "stop")
            return
        request.output_ids.append(token)
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
