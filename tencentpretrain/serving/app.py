"""The HTTP app: OpenAI-compatible completions and chat completions (with SSE streaming), the legacy
``POST /chat`` of llama_inference, ``GET /v1/models``, ``GET /health`` and the chat web page at ``GET /``.

Every request is validated before any work (``serving/requests.py``) and rejected with a real status code: 400
(malformed JSON, missing, mistyped, out-of-range or unsupported fields, prompt + max_tokens beyond the context,
with both numbers), 401 (wrong or missing API key when one is set), 404 (unknown model id), 413 (body too large),
429 (the waiting queue is full), 503 (shutting down). Errors use OpenAI's body ``{"error": {"message", "type",
"code", "param"}}`` with a string ``code``; ``/chat`` keeps its legacy ``{"answer": "", "status": "error"}`` and
adds ``error``. Generation goes through continuous batching: a ``Scheduler`` thread or an ``EngineProcess``. A
request whose sampling fails gets a 500 (or an error event when streaming); the others in the batch go on.

/v1/completions takes a string, a list of strings, a list of token ids or a list of such lists; ``echo`` puts the
prompt first and, with ``logprobs``, its tokens' logprobs (the first is null), so ``echo`` + ``max_tokens: 0`` +
``logprobs`` scores a text, as lm-evaluation-harness's ``local-completions`` does for log-likelihood tasks.
Logprobs are the log-softmax of the model's raw logits, before the repetition penalty and temperature.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from tencentpretrain.errors import TencentPretrainError
from tencentpretrain.generation.chat import chat_prompt_ids, check_prompt_fits, template_stop_strings
from tencentpretrain.generation.detokenizer import IncrementalDetokenizer
from tencentpretrain.generation.engine import GenerationConfig
from tencentpretrain.generation.generate import encode_prompt
from tencentpretrain.generation.sampling import SamplingParams, TokenLogprob
from tencentpretrain.serving import requests as parse
from tencentpretrain.serving.page import CHAT_PAGE
from tencentpretrain.serving.requests import HTTPError, Options, Prompt
from tencentpretrain.serving.scheduler import Event, QueueFull, Scheduler, ShuttingDown, Ticket
from tencentpretrain.tokenizers.templates import Template

if TYPE_CHECKING:
    from tencentpretrain.serving.engine_process import EngineProcess
from tencentpretrain.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)
DISCONNECT_POLL_S = 0.25
__all__ = ["HTTPError", "Server", "ServerConfig", "create_app"]


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """What the app serves and how."""

    model_name: str = "tencentpretrain"  # the id in /v1/models and in responses
    api_key: str | None = None  # when set, "Authorization: Bearer <key>" is required (not for / and /health)
    context_length: int = 2048  # prompt + max_tokens limit
    default_max_tokens: int = 256  # when a request gives none (less when the prompt leaves less room)
    defaults: SamplingParams = field(default_factory=SamplingParams)  # for the sampling fields a request leaves out
    max_batch_size: int = 8  # legacy /chat: questions per request
    max_request_bytes: int = 8 * 2**20  # larger bodies get 413 before they are read
    max_choices: int = 64  # prompts x n of one request
    default_stop: tuple[str, ...] = ()  # stop strings of the requests that give none (--stop)


class Server:
    """The app's state: scheduler, tokenizer, chat template and config."""

    def __init__(self, scheduler: Scheduler | EngineProcess, tokenizer: Tokenizer, template: Template,
                 config: ServerConfig) -> None:
        self.scheduler, self.tokenizer, self.template, self.config = scheduler, tokenizer, template, config
        self.token_bytes = functools.lru_cache(maxsize=65536)(self._token_bytes)

    # -------------------------------------------------------------------------------------------- parsing
    def generation_config(self, options: Options, prompt_tokens: int, choice: int = 0,
                          extra_stops: tuple[str, ...] = ()) -> GenerationConfig:
        """The GenerationConfig of choice ``choice`` of a prompt of ``prompt_tokens`` tokens. A request that
        gives no max_tokens gets the server's default, or less when the prompt leaves less room."""
        max_tokens = options.max_tokens
        if max_tokens is None:
            max_tokens = min(self.config.default_max_tokens, self.config.context_length - prompt_tokens)
            if max_tokens < 1:
                raise HTTPError(400, f"the prompt has {prompt_tokens} tokens: no room for any new token in the "
                                     f"context of {self.config.context_length} tokens", code="context_length_exceeded")
        self.check_fits(prompt_tokens, max_tokens)
        stop = options.stop if options.stop is not None else self.config.default_stop
        return GenerationConfig(max_new_tokens=max_tokens, sampling=options.sampling_of_choice(choice),
                                stop_strings=stop + extra_stops, logprobs=options.logprobs,
                                prompt_logprobs=options.echo and options.logprobs is not None)

    def check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        try:
            check_prompt_fits(prompt_tokens, max_tokens, self.config.context_length)
        except TencentPretrainError as e:
            raise HTTPError(400, str(e), code="context_length_exceeded", param="max_tokens") from None

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        try:
            return chat_prompt_ids(self.tokenizer, self.template, messages)
        except TencentPretrainError as e:
            raise HTTPError(400, str(e), param="messages") from None

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    def submit_all(self, jobs: Sequence[tuple[list[int], GenerationConfig]]) -> list[Ticket]:
        """Submit every (prompt ids, config), all or nothing: when one is refused, those already queued are
        cancelled."""
        if len(jobs) > self.config.max_choices:
            raise HTTPError(400, f"{len(jobs)} choices (prompts x n), more than this server's limit of "
                                 f"{self.config.max_choices}: split the request", param="n")
        tickets: list[Ticket] = []
        try:
            for ids, config in jobs:
                tickets.append(self.submit(ids, config))
        except HTTPError:
            for ticket in tickets:
                ticket.cancel()
            raise
        return tickets

    def submit(self, prompt_ids: list[int], config: GenerationConfig) -> Ticket:
        self.check_fits(len(prompt_ids), config.max_new_tokens)
        try:
            return self.scheduler.submit(prompt_ids, config)
        except QueueFull as e:
            raise HTTPError(429, f"server busy: {e}; retry later", "rate_limit_error",
                            code="rate_limit_exceeded") from None
        except ShuttingDown as e:
            raise HTTPError(503, str(e), "server_error", code="service_unavailable") from None
        except TencentPretrainError as e:
            raise HTTPError(400, str(e)) from None

    # -------------------------------------------------------------------------------------------- tokens
    def _token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for: a byte-fallback piece's byte, else its piece with "▁" as a space."""
        piece = self.tokenizer.id_to_piece(token_id)
        is_byte = getattr(self.tokenizer, "is_byte", None)
        if is_byte is not None and is_byte(token_id):
            return bytes([int(piece[3:-1], 16)])  # "<0xE5>"
        return piece.replace("\u2581", " ").encode("utf-8")

    def token_string(self, token_id: int) -> str:
        """The token as text; a token that is not whole UTF-8 reads "bytes:\\xe5", as in OpenAI's API."""
        data = self.token_bytes(token_id)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in data)

    def text_offsets(self, ids: Sequence[int], start: int) -> list[int]:
        """Where each token's text starts in the detokenized text of ``ids``, counted from ``start``."""
        detokenizer, offsets = IncrementalDetokenizer(self.tokenizer), []
        for token_id in ids:
            offsets.append(start + len(detokenizer.text))
            detokenizer.push(token_id)
        return offsets


# ------------------------------------------------------------------------------------------------ results
@dataclass
class Outcome:
    """Everything one choice produced: the events of its ticket added up."""

    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    stop_logprob: TokenLogprob | None = None

    def add(self, event: Event) -> None:
        self.text += event.text
        self.logprobs += event.logprobs
        self.prompt_logprobs = self.prompt_logprobs or event.prompt_logprobs
        if event.finish_reason is not None:
            self.finish_reason, self.completion_tokens = event.finish_reason, event.completion_tokens
            self.stop_logprob = event.stop_logprob


GENERATION_FAILED = "generation failed; see the server log"


async def collect_all(tickets: Sequence[Ticket], request: Request) -> list[Outcome]:
    """Wait for every ticket's whole completion. One watcher polls for a client disconnect (then every request
    is cancelled); when one request fails, the others are cancelled and the failure is a 500."""
    queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

    async def forward(index: int, ticket: Ticket) -> None:
        while True:
            event = await ticket.events.get()
            queue.put_nowait((index, event))
            if event.finish_reason is not None:
                return

    tasks = [asyncio.create_task(forward(i, t)) for i, t in enumerate(tickets)]
    outcomes = [Outcome() for _ in tickets]
    running = len(tickets)
    clock = asyncio.get_running_loop().time
    next_check = clock() + DISCONNECT_POLL_S  # checked on time, also while events keep coming
    try:
        while running:
            try:
                index, event = await asyncio.wait_for(queue.get(), max(0.0, next_check - clock()))
            except asyncio.TimeoutError:
                index, event = -1, None
            if clock() >= next_check:
                next_check = clock() + DISCONNECT_POLL_S
                if await request.is_disconnected():
                    _cancel_all(tickets)
                    for outcome in outcomes:
                        outcome.finish_reason = outcome.finish_reason or "cancelled"
                    return outcomes
            if event is None:
                continue
            outcomes[index].add(event)
            if event.finish_reason == "error":
                raise HTTPError(500, GENERATION_FAILED, "server_error", code="generation_failed")
            running -= event.finish_reason is not None
        return outcomes
    except BaseException:  # a failed choice, or the handler cancelled: nobody will read the others
        _cancel_all(tickets)
        raise
    finally:
        for task in tasks:
            task.cancel()


def _cancel_all(tickets: Sequence[Ticket]) -> None:
    for ticket in tickets:  # a finished ticket's id is unknown to the loop by now: cancelling it does nothing
        ticket.cancel()


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


async def merged_events(tickets: Sequence[Ticket]) -> AsyncIterator[tuple[int, Event]]:
    """(ticket index, event) of all ``tickets`` as they come, until each has finished; stopping early (the
    client went away) cancels those still running."""
    if len(tickets) == 1:
        async for event in events_of(tickets[0]):
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

    async def pump(index: int, ticket: Ticket) -> None:
        async for event in events_of(ticket):
            await queue.put((index, event))

    tasks = [asyncio.create_task(pump(i, t)) for i, t in enumerate(tickets)]
    running = len(tickets)
    try:
        while running:
            index, event = await queue.get()
            running -= event.finish_reason is not None
            yield index, event
    finally:
        for task in tasks:
            task.cancel()


def _drain(queue: asyncio.Queue[Event]) -> list[Event]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


def _merge(events: list[Event]) -> Event:
    last = events[-1]
    if len(events) == 1:
        return last
    prompt_logprobs = next((e.prompt_logprobs for e in events if e.prompt_logprobs is not None), None)
    return Event("".join(e.text for e in events), last.finish_reason, last.completion_tokens,
                 [lp for e in events for lp in e.logprobs], prompt_logprobs, last.stop_logprob)


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finish_reason(reason: str) -> str:
    return reason if reason in ("stop", "length") else "stop"


# ------------------------------------------------------------------------------------------------ logprobs
def completion_logprobs(server: Server, ids: Sequence[int], entries: Sequence[TokenLogprob | None],
                        offsets: Sequence[int]) -> dict[str, list[Any]]:
    """OpenAI's completions ``logprobs`` object over tokens ``ids`` (an entry of None: no logprob, as for the
    first prompt token)."""
    return {
        "tokens": [server.token_string(i) for i in ids],
        "token_logprobs": [None if e is None else e.logprob for e in entries],
        "top_logprobs": [None if e is None else {server.token_string(t): lp for t, lp in e.top} for e in entries],
        "text_offset": list(offsets),
    }


def choice_logprobs(server: Server, prompt: Prompt, outcome: Outcome, echo: bool) -> dict[str, list[Any]]:
    """The completions ``logprobs`` of a whole choice: the prompt's tokens first with echo, then the new ones
    and the eos/stop token that ended generation, if any."""
    ids: list[int] = []
    entries: list[TokenLogprob | None] = []
    offsets: list[int] = []
    start = 0
    if echo:
        ids += prompt.ids
        entries += outcome.prompt_logprobs or [None] * len(prompt.ids)
        offsets += server.text_offsets(prompt.ids, 0)
        start = len(prompt.text)
    new = [e.token_id for e in outcome.logprobs]
    ids += new
    entries += outcome.logprobs
    offsets += server.text_offsets(new, start)
    if outcome.stop_logprob is not None:
        ids.append(outcome.stop_logprob.token_id)
        entries.append(outcome.stop_logprob)
        offsets.append(start + len(outcome.text))
    return completion_logprobs(server, ids, entries, offsets)


def chat_logprob(server: Server, entry: TokenLogprob) -> dict[str, Any]:
    """One entry of a chat choice's ``logprobs.content``."""
    def token(token_id: int, logprob: float) -> dict[str, Any]:
        return {"token": server.token_string(token_id), "logprob": logprob,
                "bytes": list(server.token_bytes(token_id))}
    return {**token(entry.token_id, entry.logprob), "top_logprobs": [token(t, lp) for t, lp in entry.top]}


# ------------------------------------------------------------------------------------------------ the app
PUBLIC_PATHS = ("/", "/health")


def error_response(path: str, error: HTTPError) -> JSONResponse:
    """The error body of each API style: the legacy /chat's, or OpenAI's."""
    if path == "/chat":
        body = {"answer": "", "status": "error", "error": error.message}
    else:
        body = {"error": {"message": error.message, "type": error.kind, "code": error.code, "param": error.param}}
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
                error = HTTPError(401, "invalid or missing API key", "authentication_error", code="invalid_api_key")
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

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("request to %s failed", request.url.path)
        return error_response(request.url.path, HTTPError(500, f"internal error: {type(error).__name__}; see the "
                                                               "server log", "server_error", code="internal_error"))

    if server.config.api_key:
        app.add_middleware(ApiKeyMiddleware, key=server.config.api_key)

    def model_entry() -> dict[str, Any]:
        return {"id": server.config.model_name, "object": "model", "created": 0, "owned_by": "tencentpretrain",
                "context_length": server.config.context_length}

    async def read_body(request: Request) -> dict[str, Any]:
        return await parse.read_json(request, server.config.max_request_bytes)

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
        return {"object": "list", "data": [model_entry()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != server.config.model_name:
            raise HTTPError(404, f"the model '{model_id}' does not exist; this server serves "
                                 f"'{server.config.model_name}'", code="model_not_found", param="model")
        return model_entry()

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        options = parse.options(body, server.config.defaults, chat=False)
        prompts = parse.completion_prompts(body.get("prompt"), server.tokenizer, server.encode)
        jobs = [(p.ids, server.generation_config(options, len(p.ids), j)) for p in prompts for j in range(options.n)]
        tickets = server.submit_all(jobs)
        meta = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": server.config.model_name}
        choice_prompts = [p for p in prompts for _ in range(options.n)]
        prompt_tokens = sum(len(p.ids) for p in prompts)
        if options.stream:
            return StreamingResponse(_stream_completion(server, tickets, choice_prompts, options, meta, prompt_tokens),
                                     media_type="text/event-stream")
        outcomes = await collect_all(tickets, request)
        choices = []
        for index, (prompt, outcome) in enumerate(zip(choice_prompts, outcomes)):
            text = (prompt.text if options.echo else "") + outcome.text
            logprobs = choice_logprobs(server, prompt, outcome, options.echo) if options.logprobs is not None else None
            choices.append({"index": index, "text": text, "finish_reason": finish_reason(outcome.finish_reason),
                            "logprobs": logprobs})
        return {**meta, "object": "text_completion", "choices": choices,
                "usage": usage(prompt_tokens, sum(o.completion_tokens for o in outcomes))}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        options = parse.options(body, server.config.defaults, chat=True)
        ids = server.chat_ids(parse.chat_messages(body.get("messages")))
        stops = template_stop_strings(server.template)
        tickets = server.submit_all([(ids, server.generation_config(options, len(ids), j, stops))
                                     for j in range(options.n)])
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": server.config.model_name}
        if options.stream:
            return StreamingResponse(_stream_chat(server, tickets, options, meta, len(ids)),
                                     media_type="text/event-stream")
        outcomes = await collect_all(tickets, request)
        choices = []
        for index, outcome in enumerate(outcomes):
            logprobs = None
            if options.logprobs is not None:
                logprobs = {"content": [chat_logprob(server, e) for e in outcome.logprobs], "refusal": None}
            choices.append({"index": index, "message": {"role": "assistant", "content": outcome.text},
                            "logprobs": logprobs, "finish_reason": finish_reason(outcome.finish_reason)})
        return {**meta, "object": "chat.completion", "choices": choices,
                "usage": usage(len(ids), sum(o.completion_tokens for o in outcomes))}

    @app.post("/chat")
    async def legacy_chat(request: Request):
        body = await read_body(request)
        question = body.get("question")
        questions = [question] if isinstance(question, str) else question
        if not isinstance(questions, list) or not questions or not all(isinstance(q, str) and q for q in questions):
            raise HTTPError(400, "'question' must be a non-empty string or a list of them", param="question")
        if len(questions) > server.config.max_batch_size:
            raise HTTPError(400, f"{len(questions)} questions, more than --batch_size {server.config.max_batch_size}",
                            param="question")
        options = Options(max_tokens=parse.integer(body, "max_tokens", 1),
                          sampling=parse.sampling(body, server.config.defaults), stop=parse.stop_strings(body))
        prompts = [server.chat_ids([{"role": "user", "content": q}]) for q in questions]
        stops = template_stop_strings(server.template)
        tickets = server.submit_all([(ids, server.generation_config(options, len(ids), 0, stops)) for ids in prompts])
        results = await collect_all(tickets, request)
        texts = [server.tokenizer.decode(ids) for ids in prompts]
        return {"answer": [p + r.text for p, r in zip(texts, results)], "completion": [r.text for r in results],
                "status": "success"}

    return app


# ------------------------------------------------------------------------------------------------ streaming
STREAM_FAILED = sse({"error": {"message": GENERATION_FAILED, "type": "server_error", "code": "generation_failed",
                               "param": None}})


async def _stream_completion(server: Server, tickets: list[Ticket], prompts: list[Prompt], options: Options,
                             meta: dict[str, Any], prompt_tokens: int) -> AsyncIterator[str]:
    sent_text = [0] * len(tickets)  # characters of each choice sent so far (for text_offset)
    started = [False] * len(tickets)
    completion_tokens = 0
    async for index, event in merged_events(tickets):
        if event.finish_reason == "error":
            yield STREAM_FAILED
            return
        prompt = prompts[index]
        text, ids, entries = event.text, [], []
        if options.echo and not started[index]:
            text = prompt.text + text
            if options.logprobs is not None:
                ids += prompt.ids
                entries += event.prompt_logprobs or [None] * len(prompt.ids)
        started[index] = True
        ids += [e.token_id for e in event.logprobs]
        entries += event.logprobs
        if event.stop_logprob is not None:
            ids.append(event.stop_logprob.token_id)
            entries.append(event.stop_logprob)
        logprobs = None
        if options.logprobs is not None:
            offsets = [sent_text[index] + o for o in _string_offsets(server, ids)]
            logprobs = completion_logprobs(server, ids, entries, offsets)
        sent_text[index] += len(text)
        reason = finish_reason(event.finish_reason) if event.finish_reason else None
        if reason:
            completion_tokens += event.completion_tokens
        choice = {"index": index, "text": text, "finish_reason": reason, "logprobs": logprobs}
        yield sse({**meta, "object": "text_completion", "choices": [choice]})
    if options.include_usage:
        yield sse({**meta, "object": "text_completion", "choices": [],
                   "usage": usage(prompt_tokens, completion_tokens)})
    yield "data: [DONE]\n\n"


def _string_offsets(server: Server, ids: Sequence[int]) -> list[int]:
    """Offsets of ``ids`` within a streamed chunk: the lengths of the token strings before each."""
    offsets, position = [], 0
    for token_id in ids:
        offsets.append(position)
        position += len(server.token_bytes(token_id).decode("utf-8", errors="ignore"))
    return offsets


async def _stream_chat(server: Server, tickets: list[Ticket], options: Options, meta: dict[str, Any],
                       prompt_tokens: int) -> AsyncIterator[str]:
    base = {**meta, "object": "chat.completion.chunk"}
    for index in range(len(tickets)):
        yield sse({**base, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]})
    completion_tokens = 0
    async for index, event in merged_events(tickets):
        if event.finish_reason == "error":
            yield STREAM_FAILED
            return
        reason = finish_reason(event.finish_reason) if event.finish_reason else None
        logprobs = None
        if options.logprobs is not None and event.logprobs:
            logprobs = {"content": [chat_logprob(server, e) for e in event.logprobs], "refusal": None}
        if event.text or logprobs:
            yield sse({**base, "choices": [{"index": index, "delta": {"content": event.text}, "logprobs": logprobs,
                                            "finish_reason": None}]})
        if reason:
            completion_tokens += event.completion_tokens
            yield sse({**base, "choices": [{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}]})
    if options.include_usage:
        yield sse({**base, "choices": [], "usage": usage(prompt_tokens, completion_tokens)})
    yield "data: [DONE]\n\n"
