"""Continuous batching for the server: requests join the Engine between decode steps.

``BatchLoop`` is the policy, with no threads: requests wait in a queue under an id, are admitted into free cache
rows, advance one token per step, and come out as ``Event``s (new text, and a finish reason on the last one).
Two front ends drive it and hand events to the HTTP handlers' asyncio queues (``Ticket``):

* ``Scheduler``: the loop runs in a worker thread of the server's process (tests, embedding in a program).
* ``EngineProcess`` (``serving/engine_process.py``): the loop and the model live in a process of their own, so
  the HTTP side and the decode steps never wait for each other's Python (the GIL).

A ticket that is cancelled (the client went away) frees its row at the next step. ``drain`` stops new
admissions and waits until every admitted or queued request is done.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tencentpretrain.generation.engine import Engine, GenerationConfig, Request
from tencentpretrain.generation.sampling import TokenLogprob

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests are waiting than the server accepts (HTTP 429)."""


class ShuttingDown(Exception):
    """The server is draining and accepts no new requests (HTTP 503)."""


@dataclass
class Event:
    """New text of a request; ``finish_reason`` is set on the last event. With logprobs asked for, the new
    tokens' logprobs (their text may come in a later event: the detokenizer holds back partial characters), the
    prompt's on the first event, and that of the eos/stop id that ended generation on the last."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    stop_logprob: TokenLogprob | None = None


IdEvent = tuple[int, Event]  # (request id, event)


class BatchLoop:
    """Admission, decode steps and events over one Engine, by request id. Not thread-safe: callers serialise.

    Args:
        engine: the Engine (its ``max_batch_size`` rows are the concurrency).
        max_queue: requests allowed to wait for a row (None: any number); beyond that ``enqueue`` raises QueueFull.
    """

    def __init__(self, engine: Engine, *, max_queue: int | None = 64) -> None:
        self.engine = engine
        self.max_queue = max_queue  # None: no limit
        self.waiting: collections.deque[tuple[int, Request]] = collections.deque()
        self.active: dict[int, Request] = {}  # admitted, by request id
        self._known: dict[int, Request] = {}  # waiting or admitted: what ``cancel`` may flag

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.engine.rows)

    @property
    def stats(self) -> dict[str, int | None]:
        return {"active": len(self.engine.rows), "waiting": len(self.waiting),
                "max_batch_size": self.engine.cache.batch_size, "max_queue": self.max_queue}

    def enqueue(self, request_id: int, request: Request) -> None:
        if self.max_queue is not None and len(self.waiting) >= self.max_queue:
            raise QueueFull(f"{len(self.waiting)} requests are already waiting (limit {self.max_queue})")
        self.waiting.append((request_id, request))
        self._known[request_id] = request

    def cancel(self, request_id: int) -> None:
        """Give up on a request: a waiting one is dropped at admission, an admitted one at the next step. Only
        sets a flag, so it is safe from another thread while a step runs."""
        request = self._known.get(request_id)
        if request is not None:
            request.cancelled = True

    def admit(self) -> tuple[list[tuple[int, Request]], list[IdEvent]]:
        """Take waiting requests for the free rows: (admitted, events of those cancelled while waiting)."""
        admitted, events = [], []
        while self.waiting and len(admitted) < self.engine.free_rows:
            rid, request = self.waiting.popleft()
            if request.cancelled:
                self._known.pop(rid, None)
                events.append((rid, Event("", "cancelled")))
            else:
                admitted.append((rid, request))
        return admitted, events

    def advance(self, admitted: list[tuple[int, Request]]) -> list[IdEvent]:
        """Prefill ``admitted``, decode one step for every row; return the new text of each request."""
        advanced: list[Request] = []
        if admitted:
            self.active.update(admitted)
            advanced += self.engine.add([request for _, request in admitted])
        if self.engine.rows:
            advanced += self.engine.step()
        return self._events(advanced)

    def step(self) -> list[IdEvent]:
        """``admit`` then ``advance``: one step of the loop."""
        admitted, events = self.admit()
        return events + self.advance(admitted)

    def fail_all(self) -> list[IdEvent]:
        """After a failed step: end every request, waiting or admitted, with an "error" event; clear the engine."""
        events = [(rid, Event("", "error")) for rid in list(self._known)]
        self.waiting.clear()
        self.active.clear()
        self._known.clear()
        for request in list(self.engine.rows):
            request.cancelled = True
        try:
            self.engine.step()  # removes the cancelled rows
        except Exception:
            logger.exception("could not clear the engine after a failure")
            self.engine.rows.clear()
            self.engine.cache.active, self.engine.cache.starts, self.engine.cache.length = 0, [], 0
        return events

    def _events(self, advanced: list[Request]) -> list[IdEvent]:
        ids = {id(request): rid for rid, request in self.active.items()}
        events: list[IdEvent] = []
        for request in dict.fromkeys(advanced):  # once each: a request may be in both add's and step's results
            rid = ids.get(id(request))
            if rid is None:
                continue
            event = _event_of(request)
            if request.finished:
                del self.active[rid], self._known[rid]
                events.append((rid, event))
            elif event.text or event.logprobs or event.prompt_logprobs:
                events.append((rid, event))
        for rid, request in list(self.active.items()):  # cancelled rows leave the engine without a step result
            if request.finished:
                del self.active[rid], self._known[rid]
                events.append((rid, _event_of(request)))
        return events


def _event_of(request: Request) -> Event:
    """What ``request`` produced since its last event (its finish reason once finished)."""
    prompt_logprobs, request.prompt_logprobs = request.prompt_logprobs, None  # handed out once
    return Event(request.take_text(), request.finish_reason, len(request.output_ids), request.take_logprobs(),
                 prompt_logprobs, request.stop_logprob if request.finished else None)


class Ticket:
    """The handler's side of a submitted request: its events, and a way to give up on it."""

    def __init__(self, request_id: int, loop: asyncio.AbstractEventLoop, cancel: Callable[[int], None]) -> None:
        self.request_id = request_id
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = loop
        self._cancel = cancel

    def cancel(self) -> None:
        """Give up on the request (client disconnected): its row is freed at the next step."""
        self._cancel(self.request_id)


class TicketBook:
    """The tickets of requests in flight, by id, and the hand-over of events to their event loops."""

    def __init__(self) -> None:
        self._tickets: dict[int, Ticket] = {}
        self._next_id = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tickets)

    def new(self, cancel: Callable[[int], None]) -> Ticket:
        with self._lock:
            self._next_id += 1
            ticket = Ticket(self._next_id, asyncio.get_running_loop(), cancel)
            self._tickets[ticket.request_id] = ticket
        return ticket

    def forget(self, request_id: int) -> None:
        with self._lock:
            self._tickets.pop(request_id, None)

    def deliver(self, events: list[IdEvent]) -> None:
        """Queue each event on its ticket (from any thread). One wake-up of each event loop per call, not one per
        token, so the handlers' thread is interrupted once however many requests share a step."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Ticket, Event]]] = {}
        with self._lock:
            for rid, event in events:
                ticket = self._tickets.get(rid)
                if ticket is None:
                    continue
                if event.finish_reason is not None:
                    del self._tickets[rid]
                by_loop.setdefault(ticket._loop, []).append((ticket, event))
        for loop, batch in by_loop.items():
            if loop.is_closed():
                continue
            if _running_in(loop):
                _put_all(batch)
            else:
                loop.call_soon_threadsafe(_put_all, batch)

    def fail_all(self) -> None:
        with self._lock:
            ids = list(self._tickets)
        self.deliver([(rid, Event("", "error")) for rid in ids])


def _running_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _put_all(events: list[tuple[Ticket, Event]]) -> None:
    for ticket, event in events:
        ticket.events.put_nowait(event)


class Scheduler:
    """Drives a ``BatchLoop`` from a worker thread of this process.

    Args:
        engine: the Engine (its ``max_batch_size`` rows are the concurrency).
        max_queue: requests allowed to wait for a row; beyond that ``submit`` raises QueueFull.
    """

    def __init__(self, engine: Engine, *, max_queue: int = 64) -> None:
        self.loop = BatchLoop(engine, max_queue=max_queue)
        self.tickets = TicketBook()
        self._wake = threading.Condition()
        self._draining = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="generation-scheduler", daemon=True)
        self._thread.start()

    @property
    def engine(self) -> Engine:
        return self.loop.engine

    # -------------------------------------------------------------------------------------------- handler side
    def submit(self, prompt_ids: list[int], config: GenerationConfig) -> Ticket:
        """Queue a request; raises QueueFull, ShuttingDown, or ConfigError for a prompt the engine refuses."""
        request = self.engine.new_request(prompt_ids, config)
        with self._wake:
            if self._draining:
                raise ShuttingDown("the server is shutting down")
            ticket = self.tickets.new(self._cancel)
            try:
                self.loop.enqueue(ticket.request_id, request)
            except QueueFull:
                self.tickets.forget(ticket.request_id)
                raise
            self._wake.notify()
        return ticket

    @property
    def stats(self) -> dict[str, int | None]:
        return {**self.loop.stats, "in_flight": len(self.tickets)}

    def health(self) -> dict[str, object]:
        """What ``/health`` reports: "ok" while requests are taken, else "draining", "stopped" or "failed"."""
        if self._stopped:
            status = "stopped"
        elif self._draining:
            status = "draining"
        else:
            status = "ok" if self._thread.is_alive() else "failed"
        return {"status": status, "engine": "alive" if self._thread.is_alive() else "down", **self.stats}

    def drain(self, timeout: float | None = None) -> None:
        """Accept nothing new, finish everything admitted or queued, then stop the worker."""
        with self._wake:
            self._draining = True
            self._wake.notify()
        with self._wake:
            self._wake.wait_for(lambda: not self.loop.busy, timeout=timeout)
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout)

    def _cancel(self, request_id: int) -> None:
        self.loop.cancel(request_id)
        with self._wake:
            self._wake.notify()

    # -------------------------------------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self.loop.busy or self._stopped)
                if self._stopped and not self.engine.rows:
                    return
                admitted, events = self.loop.admit()
            try:
                events += self.loop.advance(admitted)
            except Exception:  # a failed step must not hang every client: fail the requests in flight
                logger.exception("generation step failed")
                events += self.loop.fail_all()
            self.tickets.deliver(events)
            with self._wake:
                self._wake.notify_all()
