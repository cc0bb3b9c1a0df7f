"""The HTTP app: OpenAI-compatible completions and chat completions (with SSE streaming), the legacy
``POST /chat`` of llama_inference, ``GET /v1/models``, ``GET /health`` and the chat web page at ``GET /``.

Every request is validated before any work and rejected with a real status code: 400 (malformed JSON, missing
or wrong fields, max_tokens < 1, prompt + max_tokens beyond the context, with both numbers), 401 (wrong or missing
API key when one is set), 429 (the waiting queue is full), 503 (shutting down). Errors use OpenAI's body
``{"error": {"message", "type", "code"}}``; ``/chat`` keeps its legacy ``{"answer": "", "status": "error"}`` and
adds ``error``. Generation goes through continuous batching: a ``Scheduler`` thread or an ``EngineProcess``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from tencentpretrain.data.templates import Template
from tencentpretrain.errors import TencentPretrainError
from tencentpretrain.generation.chat import chat_prompt_ids, check_prompt_fits, template_stop_strings
from tencentpretrain.generation.engine import GenerationConfig
from tencentpretrain.generation.generate import encode_prompt
from tencentpretrain.generation.sampling import SamplingParams
from tencentpretrain.serving.page import CHAT_PAGE
from tencentpretrain.serving.scheduler import Event, QueueFull, Scheduler, ShuttingDown, Ticket

if TYPE_CHECKING:
    from tencentpretrain.serving.engine_process import EngineProcess
from tencentpretrain.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)
DISCONNECT_POLL_S = 0.25


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """What the app serves and how."""

    model_name: str = "tencentpretrain"  # the id in /v1/models and in responses
    api_key: str | None = None  # when set, "Authorization: Bearer <key>" is required (not for / and /health)
    context_length: int = 2048  # prompt + max_tokens limit
    default_max_tokens: int = 256  # when a request gives none
    defaults: SamplingParams = field(default_factory=SamplingParams)  # sampling when a request gives none
    max_batch_size: int = 8  # legacy /chat: questions per request


class HTTPError(Exception):
    """An error answered with ``status``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class Server:
    """The app's state: scheduler, tokenizer, chat template and config."""

    def __init__(self, scheduler: Scheduler | EngineProcess, tokenizer: Tokenizer, template: Template,
                 config: ServerConfig) -> None:
        self.scheduler, self.tokenizer, self.template, self.config = scheduler, tokenizer, template, config

    # -------------------------------------------------------------------------------------------- parsing
    def generation_config(self, body: Mapping[str, Any], extra_stops: tuple[str, ...] = ()) -> GenerationConfig:
        """GenerationConfig from OpenAI fields (max_tokens, temperature, top_p, stop, seed) and our extras
        (top_k, repetition_penalty, repetition_penalty_range)."""
        d = self.config.defaults
        max_tokens = _field(body, "max_tokens", int, self.config.default_max_tokens)
        max_tokens = _field(body, "max_completion_tokens", int, max_tokens)
        if max_tokens < 1:
            raise HTTPError(400, f"max_tokens must be at least 1, got {max_tokens}")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise HTTPError(400, "'stop' must be a string or a list of strings")
        try:
            sampling = replace(
                d,
                temperature=_field(body, "temperature", float, d.temperature),
                top_p=_field(body, "top_p", float, d.top_p),
                top_k=_field(body, "top_k", int, d.top_k),
                repetition_penalty=_field(body, "repetition_penalty", float, d.repetition_penalty),
                repetition_penalty_range=_field(body, "repetition_penalty_range", int, d.repetition_penalty_range),
                seed=_field(body, "seed", int, d.seed),
            )
        except TencentPretrainError as e:
            raise HTTPError(400, str(e)) from None
        return GenerationConfig(max_new_tokens=max_tokens, sampling=sampling,
                                stop_strings=tuple(stop) + extra_stops)

    def check_fits(self, prompt_ids: list[int], config: GenerationConfig) -> None:
        try:
            check_prompt_fits(len(prompt_ids), config.max_new_tokens, self.config.context_length)
        except TencentPretrainError as e:
            raise HTTPError(400, str(e), "context_length_exceeded") from None

    def chat_ids(self, messages: Any) -> list[int]:
        if not isinstance(messages, list) or not messages:
            raise HTTPError(400, "'messages' must be a non-empty list of {role, content} objects")
        try:
            return chat_prompt_ids(self.tokenizer, self.template, messages)
        except TencentPretrainError as e:
            raise HTTPError(400, str(e)) from None

    def submit(self, prompt_ids: list[int], config: GenerationConfig) -> Ticket:
        self.check_fits(prompt_ids, config)
        try:
            return self.scheduler.submit(prompt_ids, config)
        except QueueFull as e:
            raise HTTPError(429, f"server busy: {e}; retry later", "rate_limit_error") from None
        except ShuttingDown as e:
            raise HTTPError(503, str(e), "server_error") from None
        except TencentPretrainError as e:
            raise HTTPError(400, str(e)) from None


def _field(body: Mapping[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise HTTPError(400, f"'{name}' must be a{'n integer' if kind is int else ' number'}, got {value!r}")
    return kind(value)


# ------------------------------------------------------------------------------------------------ helpers
async def read_json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HTTPError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object")
    return body


async def collect(ticket: Ticket, request: Request) -> tuple[str, str, int]:
    """Wait for the whole completion; cancel it if the client disconnects. Returns (text, finish, tokens)."""
    parts: list[str] = []
    try:
        while True:
            try:
                event = await asyncio.wait_for(ticket.events.get(), DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    ticket.cancel()
                    return "".join(parts), "cancelled", 0
                continue
            parts.append(event.text)
            if event.finish_reason is not None:
                if event.finish_reason == "error":
                    raise HTTPError(500, "generation failed; see the server log", "server_error")
                return "".join(parts), event.finish_reason, event.completion_tokens
    except asyncio.CancelledError:
        ticket.cancel()
        raise


async def events_of(ticket: Ticket) -> AsyncIterator[Event]:
    """The ticket's events until the last; cancels the request if the consumer stops early (disconnect).

    Events that queued up while the consumer was busy are merged into one, so a slow client gets fewer,
    larger chunks instead of falling further behind.
    """
    finished = False
    try:
        while not finished:
            event = _merge([await ticket.events.get()] + _drain(ticket.events))
            finished = event.finish_reason is not None
            yield event
    finally:
        if not finished:
            ticket.cancel()


def _drain(queue: asyncio.Queue[Event]) -> list[Event]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


def _merge(events: list[Event]) -> Event:
    last = events[-1]
    return last if len(events) == 1 else Event("".join(e.text for e in events), last.finish_reason,
                                               last.completion_tokens)


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finish_reason(reason: str) -> str:
    return reason if reason in ("stop", "length") else "stop"


# ------------------------------------------------------------------------------------------------ the app
PUBLIC_PATHS = ("/", "/health")


def error_response(path: str, error: HTTPError) -> JSONResponse:
    """The error body of each API style: the legacy /chat's, or OpenAI's."""
    if path == "/chat":
        body = {"answer": "", "status": "error", "error": error.message}
    else:
        body = {"error": {"message": error.message, "type": error.kind, "code": error.status}}
    return JSONResponse(body, status_code=error.status)


class ApiKeyMiddleware:
    """Rejects requests without ``Authorization: Bearer KEY`` (401), except the page and the health check.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` would copy every streamed chunk through an
    extra task, which costs throughput with many streaming clients.
    """

    def __init__(self, app: Any, *, key: str) -> None:
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            if dict(scope["headers"]).get(b"authorization", b"") != self.expected:
                error = HTTPError(401, "invalid or missing API key", "authentication_error")
                await error_response(scope["path"], error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(server: Server) -> FastAPI:
    """The FastAPI app over ``server``; on shutdown the scheduler drains (in-flight requests finish)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(server.scheduler.drain)

    app = FastAPI(title="tencentpretrain", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, error: HTTPError) -> JSONResponse:
        return error_response(request.url.path, error)

    if server.config.api_key:
        app.add_middleware(ApiKeyMiddleware, key=server.config.api_key)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return CHAT_PAGE.replace("__MODEL__", server.config.model_name)

    @app.get("/health")
    async def health() -> JSONResponse:
        """The engine's state and queue; 200 only while it takes requests (load balancers read the code)."""
        report = server.scheduler.health()
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry = {"id": server.config.model_name, "object": "model", "created": 0, "owned_by": "tencentpretrain",
                 "context_length": server.config.context_length}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_json(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise HTTPError(400, "'prompt' must be a non-empty string")
        config = server.generation_config(body)
        ids = encode_prompt(server.tokenizer, prompt)
        ticket = server.submit(ids, config)
        meta = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": server.config.model_name}
        if body.get("stream"):
            return StreamingResponse(_stream_completion(ticket, meta, len(ids)), media_type="text/event-stream")
        text, reason, tokens = await collect(ticket, request)
        return {**meta, "object": "text_completion", "usage": usage(len(ids), tokens),
                "choices": [{"index": 0, "text": text, "finish_reason": finish_reason(reason), "logprobs": None}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request)
        ids = server.chat_ids(body.get("messages"))
        config = server.generation_config(body, template_stop_strings(server.template))
        ticket = server.submit(ids, config)
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": server.config.model_name}
        if body.get("stream"):
            return StreamingResponse(_stream_chat(ticket, meta), media_type="text/event-stream")
        text, reason, tokens = await collect(ticket, request)
        message = {"role": "assistant", "content": text}
        return {**meta, "object": "chat.completion", "usage": usage(len(ids), tokens),
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(reason)}]}

    @app.post("/chat")
    async def legacy_chat(request: Request):
        body = await read_json(request)
        question = body.get("question")
        questions = [question] if isinstance(question, str) else question
        if not isinstance(questions, list) or not questions or not all(isinstance(q, str) and q for q in questions):
            raise HTTPError(400, "'question' must be a non-empty string or a list of them")
        if len(questions) > server.config.max_batch_size:
            raise HTTPError(400, f"{len(questions)} questions, more than --batch_size {server.config.max_batch_size}")
        config = server.generation_config(body, template_stop_strings(server.template))
        prompts = [server.chat_ids([{"role": "user", "content": q}]) for q in questions]
        for ids in prompts:
            server.check_fits(ids, config)
        tickets: list[Ticket] = []
        try:
            for ids in prompts:
                tickets.append(server.submit(ids, config))
        except HTTPError:
            for ticket in tickets:  # all or nothing: free what was already queued
                ticket.cancel()
            raise
        results = await asyncio.gather(*(collect(t, request) for t in tickets))
        texts = [server.tokenizer.decode(ids) for ids in prompts]
        return {"answer": [p + r[0] for p, r in zip(texts, results)], "completion": [r[0] for r in results],
                "status": "success"}

    return app


async def _stream_completion(ticket: Ticket, meta: dict[str, Any], prompt_tokens: int) -> AsyncIterator[str]:
    async for event in events_of(ticket):
        if event.finish_reason == "error":
            yield sse({"error": {"message": "generation failed; see the server log", "type": "server_error"}})
            return
        reason = finish_reason(event.finish_reason) if event.finish_reason else None
        choice = {"index": 0, "text": event.text, "finish_reason": reason, "logprobs": None}
        chunk = {**meta, "object": "text_completion", "choices": [choice]}
        if reason:
            chunk["usage"] = usage(prompt_tokens, event.completion_tokens)
        yield sse(chunk)
    yield "data: [DONE]\n\n"


async def _stream_chat(ticket: Ticket, meta: dict[str, Any]) -> AsyncIterator[str]:
    base = {**meta, "object": "chat.completion.chunk"}
    yield sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]})
    async for event in events_of(ticket):
        if event.finish_reason == "error":
            yield sse({"error": {"message": "generation failed; see the server log", "type": "server_error"}})
            return
        reason = finish_reason(event.finish_reason) if event.finish_reason else None
        if event.text:
            yield sse({**base, "choices": [{"index": 0, "delta": {"content": event.text}, "finish_reason": None}]})
        if reason:
            yield sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
    yield "data: [DONE]\n\n"
