"""Reading API requests: the JSON body, each field's type and range, prompts and chat messages.

Everything a request asks for is checked here, before it is admitted, so that a bad value is a 400 naming the
field instead of a failure inside a batched decode step. OpenAI fields this server does not implement are
rejected (400, code ``unsupported_parameter``) unless they hold their neutral value (``presence_penalty: 0``,
``logit_bias: {}``...): a request never silently gets something other than what it asked for. ``null`` counts as
leaving a field out, as in OpenAI's API.

Server-side defaults (the sampling flags of ``llama_server.py``) fill only the fields a request leaves out, with
one rule on top: a request that sets ``temperature: 0`` is plain greedy decoding, so the server's
``--repetition_penalty`` does not apply to it (a ``repetition_penalty`` in the request still does).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request

from tencentpretrain.errors import TencentPretrainError
from tencentpretrain.generation.sampling import SEED_LIMIT, SamplingParams
from tencentpretrain.tokenizers.base import Tokenizer

MAX_LOGPROBS = 20  # alternatives per token, OpenAI's limit for chat (completions allow 5)
MAX_TOKEN_LIMIT = 2**31  # bigger integer fields are refused outright (no context is that long)


class HTTPError(Exception):
    """An error answered with ``status`` and OpenAI's error body: ``type`` (``kind``), a string ``code`` and the
    request field at fault (``param``)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", *,
                 code: str = "invalid_value", param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param


def invalid(param: str, message: str, code: str = "invalid_value") -> HTTPError:
    return HTTPError(400, message, code=code, param=param)


# ------------------------------------------------------------------------------------------------ the body
async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object: 413 beyond ``max_bytes`` (read no further), 400 when it is not JSON, not an
    object, nested too deep, or holds text that is not Unicode (a lone surrogate such as "\\ud800")."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HTTPError(400, f"the body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:
        raise HTTPError(400, "the body is nested too deeply", code="invalid_json") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object", code="invalid_json")
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # lone surrogates cannot be encoded
    except UnicodeEncodeError:
        raise HTTPError(400, "the body holds a lone UTF-16 surrogate (\\ud800-\\udfff): it is not valid Unicode text",
                        code="invalid_json") from None
    return body


def _too_large(size: int, limit: int) -> HTTPError:
    return HTTPError(413, f"the body has {size} bytes or more, more than the limit of {limit} "
                          "(--max_request_bytes)", code="request_too_large")


# ------------------------------------------------------------------------------------------------ fields
def check_fields(body: Mapping[str, Any], supported: frozenset[str]) -> None:
    """400 for a field that is neither supported nor at its neutral value."""
    for name, value in body.items():
        if name in supported or value is None:
            continue
        neutral = NEUTRAL_VALUES.get(name)
        if neutral is not None and neutral(value):
            continue
        if neutral is not None:
            message = f"'{name}' = {json.dumps(value)[:80]} is not supported by this server; leave it out"
        else:
            message = f"unknown or unsupported field '{name}'; leave it out"
        raise invalid(name, message, "unsupported_parameter")


NEUTRAL_VALUES: dict[str, Callable[[Any], bool]] = {  # OpenAI fields we accept only when they change nothing
    "presence_penalty": lambda v: _is_number(v) and v == 0,
    "frequency_penalty": lambda v: _is_number(v) and v == 0,
    "logit_bias": lambda v: v == {},
    "best_of": lambda v: v == 1,  # the server does not rank several candidates
    "suffix": lambda v: v == "",
    "tools": lambda v: v == [],
    "tool_choice": lambda v: v == "none",
    "parallel_tool_calls": lambda v: isinstance(v, bool),  # only matters with tools
    "response_format": lambda v: v == {"type": "text"},
    "store": lambda v: v is False,
    "service_tier": lambda v: v in ("auto", "default"),
}

SAMPLING_FIELDS = frozenset({"temperature", "top_p", "top_k", "repetition_penalty", "repetition_penalty_range",
                             "repetition_penalty_slope", "seed", "stop", "max_tokens"})
COMMON_FIELDS = SAMPLING_FIELDS | {"model", "user", "n", "stream", "stream_options"}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt", "logprobs", "echo"}
CHAT_FIELDS = COMMON_FIELDS | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(body: Mapping[str, Any], name: str, low: int, high: int = MAX_TOKEN_LIMIT) -> int | None:
    """An integer field in [low, high) (an integral float such as 3.0 counts); None when left out."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"'{name}' must be an integer, got {json.dumps(value)[:80]}", "invalid_type")
    if not low <= value < high:
        raise invalid(name, f"'{name}' must be in [{low}, {high}), got {value}")
    return value


def number(body: Mapping[str, Any], name: str) -> float | None:
    """A finite number field; None when left out. (Ranges are SamplingParams's.)"""
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value):
        raise invalid(name, f"'{name}' must be a finite number, got {json.dumps(value)[:80]}", "invalid_type")
    return float(value)


def boolean(body: Mapping[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid(name, f"'{name}' must be true or false, got {json.dumps(value)[:80]}", "invalid_type")
    return value


def stop_strings(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The request's stop strings; None when it gives none (the server's --stop apply then)."""
    stop = body.get("stop")
    if stop is None:
        return None
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 16:
        raise invalid("stop", "'stop' must be a string or a list of at most 16 strings", "invalid_type")
    return tuple(s for s in stop if s)


# ------------------------------------------------------------------------------------------------ options
@dataclass(frozen=True, kw_only=True)
class Options:
    """What a request asks for, checked; the prompt is read separately."""

    max_tokens: int | None  # None: as many as fit in the context, at most the server's default
    sampling: SamplingParams
    stop: tuple[str, ...] | None = None  # None: the server's default stop strings
    n: int = 1  # choices per prompt
    logprobs: int | None = None  # None: none; k: each token's logprob and the k most likely tokens'
    echo: bool = False  # completions: the prompt (and its logprobs) come first
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage

    def sampling_of_choice(self, index: int) -> SamplingParams:
        """The sampling of choice ``index`` of a prompt: with a seed, choice i uses seed + i, so ``n`` seeded
        choices differ from each other and each is reproducible."""
        seed = self.sampling.seed
        return self.sampling if seed is None or index == 0 else replace(self.sampling, seed=(seed + index) % SEED_LIMIT)


def sampling(body: Mapping[str, Any], defaults: SamplingParams) -> SamplingParams:
    """The request's sampling fields over the server's ``defaults`` (see the module docstring)."""
    temperature = number(body, "temperature")
    values = {
        "temperature": temperature,
        "top_p": number(body, "top_p"),
        "top_k": integer(body, "top_k", 0, 2**63),
        "repetition_penalty": number(body, "repetition_penalty"),
        "repetition_penalty_range": integer(body, "repetition_penalty_range", 0, 2**63),
        "repetition_penalty_slope": number(body, "repetition_penalty_slope"),
        "seed": integer(body, "seed", 0, SEED_LIMIT),
    }
    if temperature == 0 and values["repetition_penalty"] is None:
        values["repetition_penalty"] = 1.0  # temperature 0 asks for plain greedy decoding
    try:
        return replace(defaults, **{k: v for k, v in values.items() if v is not None})
    except TencentPretrainError as e:
        raise invalid(_field_named_in(str(e)), str(e)) from None


def _field_named_in(message: str) -> str | None:
    return next((name for name in sorted(SAMPLING_FIELDS, key=len, reverse=True) if message.startswith(name)), None)


def options(body: Mapping[str, Any], defaults: SamplingParams, *, chat: bool) -> Options:
    """The Options of an OpenAI request (completions or chat completions)."""
    check_fields(body, CHAT_FIELDS if chat else COMPLETION_FIELDS)
    max_tokens = integer(body, "max_tokens", 0)
    if chat:
        max_tokens = integer(body, "max_completion_tokens", 0) if max_tokens is None else max_tokens
    echo = bool(boolean(body, "echo"))
    if max_tokens == 0 and not echo:
        raise invalid("max_tokens", "max_tokens must be at least 1 (0 is allowed only with echo, to score a prompt)")
    if chat:
        logprobs = None
        if boolean(body, "logprobs"):
            logprobs = integer(body, "top_logprobs", 0, MAX_LOGPROBS + 1) or 0
        elif body.get("top_logprobs") is not None:
            raise invalid("top_logprobs", "'top_logprobs' needs 'logprobs': true")
    else:
        logprobs = integer(body, "logprobs", 0, MAX_LOGPROBS + 1)
    stream = bool(boolean(body, "stream"))
    stream_options = body.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not stream:
            raise invalid("stream_options", "'stream_options' is only allowed with 'stream': true")
        if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
            raise invalid("stream_options", "'stream_options' supports only {\"include_usage\": bool}",
                          "unsupported_parameter")
        include_usage = bool(boolean(stream_options, "include_usage"))
    if isinstance(body.get("model"), (dict, list)):
        raise invalid("model", "'model' must be a string", "invalid_type")
    return Options(max_tokens=max_tokens, sampling=sampling(body, defaults), stop=stop_strings(body),
                   n=integer(body, "n", 1, 129) or 1, logprobs=logprobs, echo=echo, stream=stream,
                   include_usage=include_usage)


# ------------------------------------------------------------------------------------------------ prompts
@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    text: str  # as given, or the decoded ids of a token prompt


def completion_prompts(value: Any, tokenizer: Tokenizer, encode: Callable[[str], list[int]]) -> list[Prompt]:
    """The prompts of /v1/completions: a string, a list of strings, a list of token ids, or a list of those."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise invalid("prompt", "'prompt' must be a non-empty string, list of strings, list of token ids, or list "
                                "of lists of token ids", "invalid_type" if value is not None else
                      "missing_required_parameter")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        value = [value]  # one prompt of token ids
    prompts = []
    for item in value:
        if isinstance(item, str) and item:
            prompts.append(Prompt(encode(item), item))
        elif isinstance(item, list) and item and all(isinstance(v, int) and not isinstance(v, bool) for v in item):
            bad = next((v for v in item if not 0 <= v < tokenizer.vocab_size), None)
            if bad is not None:
                raise invalid("prompt", f"token id {bad} is not in the vocabulary [0, {tokenizer.vocab_size})")
            prompts.append(Prompt(list(item), tokenizer.decode(item)))
        else:
            raise invalid("prompt", "every prompt must be a non-empty string or a non-empty list of token ids",
                          "invalid_type")
    return prompts


CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def chat_messages(value: Any) -> list[dict[str, str]]:
    """``messages`` as {role, content} with string content: a list of text parts is joined with newlines;
    "developer" is OpenAI's newer name for "system"."""
    if not isinstance(value, list) or not value:
        raise invalid("messages", "'messages' must be a non-empty list of {role, content} objects",
                      "missing_required_parameter" if value is None else "invalid_type")
    messages = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid("messages", f"{where} must be an object {{role, content}}", "invalid_type")
        extra = [k for k, v in message.items() if k not in ("role", "content") and v is not None]
        if extra:
            raise invalid("messages", f"{where}.{extra[0]} is not supported; leave it out", "unsupported_parameter")
        role = CHAT_ROLES.get(message.get("role"))
        if role is None:
            raise invalid("messages", f"{where}.role must be one of {sorted(CHAT_ROLES)}, got {message.get('role')!r}")
        messages.append({"role": role, "content": _content_text(message.get("content"), where)})
    return messages


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid("messages", f"{where}.content: only text parts {{\"type\": \"text\", \"text\": ...}} "
                                          "are supported", "unsupported_parameter")
            texts.append(part["text"])
        return "\n".join(texts)
    raise invalid("messages", f"{where}.content must be a string or a non-empty list of text parts", "invalid_type")
