"""Continuous batching for the server: one worker thread drives the Engine; requests join between decode steps.

HTTP handlers (asyncio) call ``Scheduler.submit``, which queues the request and returns a ``Ticket``. The worker
admits waiting requests into free cache rows, runs one decode step for all active rows, and pushes each
request's new text to its ticket's asyncio queue. A ticket that is cancelled (the client went away) frees its row
at the next step. ``drain`` stops new admissions and waits until every admitted or queued request is done.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from dataclasses import dataclass

from tencentpretrain.generation.engine import Engine, GenerationConfig, Request

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests are waiting than the server accepts (HTTP 429)."""


class ShuttingDown(Exception):
    """The server is draining and accepts no new requests (HTTP 503)."""


@dataclass
class Event:
    """New text of a request; ``finish_reason`` is set on the last event."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0


class Ticket:
    """The handler's side of a submitted request."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = loop

    def cancel(self) -> None:
        """Give up on the request (client disconnected): its row is freed at the next step."""
        self.request.cancelled = True

    def _publish(self, event: Event) -> None:
        self._loop.call_soon_threadsafe(self.events.put_nowait, event)


def _deliver(events: list[tuple[Ticket, Event]]) -> None:
    """Hand a step's events to the handlers: one wake-up of each event loop per step, not one per token, so
    the handlers' thread is interrupted once however many requests share the step."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Ticket, Event]]] = {}
    for ticket, event in events:
        by_loop.setdefault(ticket._loop, []).append((ticket, event))
    for loop, batch in by_loop.items():
        loop.call_soon_threadsafe(_put_all, batch)


def _put_all(events: list[tuple[Ticket, Event]]) -> None:
    for ticket, event in events:
        ticket.events.put_nowait(event)


class Scheduler:
    """Owns the Engine and its worker thread.

    Args:
        engine: the Engine (its ``max_batch_size`` rows are the concurrency).
        max_queue: requests allowed to wait for a row; beyond that ``submit`` raises QueueFull.
    """

    def __init__(self, engine: Engine, *, max_queue: int = 64) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._waiting: collections.deque[Ticket] = collections.deque()
        self._tickets: dict[int, Ticket] = {}
        self._wake = threading.Condition()
        self._draining = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="generation-scheduler", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------------------------------------- handler side
    def new_request(self, prompt_ids: list[int], config: GenerationConfig) -> Request:
        return self.engine.new_request(prompt_ids, config)

    def submit(self, request: Request) -> Ticket:
        """Queue ``request``; raises QueueFull or ShuttingDown."""
        ticket = Ticket(request, asyncio.get_running_loop())
        with self._wake:
            if self._draining:
                raise ShuttingDown("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting (limit {self.max_queue})")
            self._waiting.append(ticket)
            self._wake.notify()
        return ticket

    @property
    def stats(self) -> dict[str, int]:
        return {"active": len(self.engine.rows), "waiting": len(self._waiting),
                "max_batch_size": self.engine.cache.batch_size, "max_queue": self.max_queue}

    def drain(self, timeout: float | None = None) -> None:
        """Accept nothing new, finish everything admitted or queued, then stop the worker."""
        with self._wake:
            self._draining = True
            self._wake.notify()
        with self._wake:
            self._wake.wait_for(lambda: not self._waiting and not self.engine.rows, timeout=timeout)
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout)

    # -------------------------------------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._waiting or self.engine.rows or self._stopped)
                if self._stopped and not self.engine.rows:
                    return
                admitted = self._take_waiting()
            try:
                self._advance(admitted)
            except Exception:  # a failed step must not hang every client: fail the requests in flight
                logger.exception("generation step failed")
                self._fail_all()
            with self._wake:
                self._wake.notify_all()

    def _take_waiting(self) -> list[Ticket]:
        admitted = []
        while self._waiting and len(admitted) < self.engine.free_rows:
            ticket = self._waiting.popleft()
            if ticket.request.cancelled:
                ticket._publish(Event("", "cancelled"))
                continue
            admitted.append(ticket)
        return admitted

    def _advance(self, admitted: list[Ticket]) -> None:
        if admitted:
            for ticket in admitted:
                self._tickets[id(ticket.request)] = ticket
            self._publish(self.engine.add([t.request for t in admitted]))
        if self.engine.rows:
            self._publish(self.engine.step())

    def _publish(self, requests: list[Request]) -> None:
        events: list[tuple[Ticket, Event]] = []
        for request in requests:
            ticket = self._tickets.get(id(request))
            if ticket is None:
                continue
            text = request.take_text()
            if request.finished:
                del self._tickets[id(request)]
                events.append((ticket, Event(text, request.finish_reason, len(request.output_ids))))
            elif text:
                events.append((ticket, Event(text, None, len(request.output_ids))))
        for key, ticket in list(self._tickets.items()):  # cancelled rows leave the engine without a step result
            if ticket.request.finished:
                del self._tickets[key]
                events.append((ticket, Event(ticket.request.take_text(), ticket.request.finish_reason)))
        _deliver(events)

    def _fail_all(self) -> None:
        for ticket in self._tickets.values():
            ticket._publish(Event("", "error"))
        self._tickets.clear()
        for request in list(self.engine.rows):
            request.cancelled = True
        try:
            self.engine.step()  # removes the cancelled rows
        except Exception:
            logger.exception("could not clear the engine after a failure")
            self.engine.rows.clear()
            self.engine.cache.active, self.engine.cache.starts, self.engine.cache.length = 0, [], 0
