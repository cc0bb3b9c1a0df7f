"""The generation engine in a process of its own, behind the same interface as ``Scheduler``.

In one process, the decode loop and the HTTP side share the GIL: every streamed chunk the event loop writes
holds it for some microseconds, and the engine's thread, which needs it between two torch operations, waits.
Here the model, the ``Engine`` and its ``BatchLoop`` live in a child process (started with ``spawn``: no forked
torch or OpenMP state), and the two sides talk over a pipe:

    parent -> child   ("submit", id, prompt_ids, GenerationConfig) | ("cancel", id) | ("drain",)
    child -> parent   ("ready", stats) | ("failed", message) | ("events", [(id, Event)], stats) | ("drained",)

The child blocks on the pipe when it has nothing to do, and otherwise reads what arrived between two decode
steps. The parent reads the pipe from its event loop (``add_reader``), so events reach the handlers without a
thread. The child ignores SIGINT: Ctrl-C reaches the whole process group, and the parent, not the child, decides
when in-flight requests are done. If the child dies, every request in flight ends with an "error" event and new
ones get ShuttingDown (HTTP 503).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from tencentpretrain.cli import configure_logging
from tencentpretrain.generation.engine import Engine, GenerationConfig, check_prompt
from tencentpretrain.models.model import Model
from tencentpretrain.serving.scheduler import BatchLoop, Event, QueueFull, ShuttingDown, Ticket, TicketBook
from tencentpretrain.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)

ModelFactory = Callable[[], tuple[Model, Tokenizer]]  # picklable: it runs in the child


class EngineProcess:
    """Starts the engine process and waits until its model is loaded.

    Args:
        factory: builds (model, tokenizer) in the child; must be picklable (a module-level function, or a
            ``functools.partial`` of one).
        max_batch_size, max_length: the Engine's rows and context.
        max_queue: requests allowed to wait for a row; beyond that ``submit`` raises QueueFull.
        threads: torch threads of the child (None: torch's default).
        start_timeout: seconds to wait for the model to load.
    """

    def __init__(self, factory: ModelFactory, *, max_batch_size: int, max_length: int, max_queue: int = 64,
                 threads: int | None = None, start_timeout: float = 600.0) -> None:
        self.max_batch_size, self.max_length, self.max_queue = max_batch_size, max_length, max_queue
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=serve_engine, name="generation-engine", daemon=True,
            args=(child_conn, factory, max_batch_size, max_length, threads),
        )
        self._process.start()
        child_conn.close()
        self._send_lock = threading.Lock()
        self.tickets = TicketBook()
        self._stats: dict[str, int] = {}
        self._draining = False
        self._dead = False
        self._drained = threading.Event()
        self._reading: asyncio.AbstractEventLoop | None = None
        self._stats = self._wait_ready(start_timeout)

    # -------------------------------------------------------------------------------------------- handler side
    def submit(self, prompt_ids: list[int], config: GenerationConfig) -> Ticket:
        """Queue a request; raises QueueFull, ShuttingDown, or ConfigError for a prompt the engine refuses."""
        check_prompt(prompt_ids, self.max_length)
        if self._dead:
            raise ShuttingDown("the generation engine has stopped; see the server log")
        if self._draining:
            raise ShuttingDown("the server is shutting down")
        if len(self.tickets) >= self.max_batch_size + self.max_queue:
            raise QueueFull(f"{len(self.tickets) - self.max_batch_size} requests are already waiting "
                            f"(limit {self.max_queue})")
        self._read_in(asyncio.get_running_loop())
        ticket = self.tickets.new(self._cancel)
        self._send(("submit", ticket.request_id, list(prompt_ids), config))
        return ticket

    @property
    def stats(self) -> dict[str, int]:
        return {**self._stats, "max_batch_size": self.max_batch_size, "max_queue": self.max_queue}

    def drain(self, timeout: float | None = None) -> None:
        """Accept nothing new, let the child finish everything admitted or queued, then let it exit."""
        self._draining = True
        if not self._dead:
            self._send(("drain",))
            if self._reading is None:  # nothing was ever submitted: read the answer here
                self._read_until_drained(timeout)
            self._drained.wait(timeout)
        self._process.join(timeout)
        if self._process.is_alive():
            logger.warning("the engine process did not exit; terminating it")
            self._process.terminate()

    def _cancel(self, request_id: int) -> None:
        if not self._dead:
            self._send(("cancel", request_id))

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            with self._send_lock:
                self._conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            self._engine_died()

    # -------------------------------------------------------------------------------------------- reading
    def _wait_ready(self, timeout: float) -> dict[str, int]:
        waited = 0.0
        while not self._conn.poll(1.0):
            waited += 1.0
            if not self._process.is_alive() or waited >= timeout:
                self._process.kill()
                raise RuntimeError(f"the engine process did not start (exit code {self._process.exitcode})")
        message = self._conn.recv()
        if message[0] == "failed":
            self._process.join(10)
            raise RuntimeError(f"the engine process could not load the model:\n{message[1]}")
        return message[1]

    def _read_in(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the child's messages in ``loop`` (the server's event loop) from now on."""
        if self._reading is loop:
            return
        if self._reading is not None:
            raise RuntimeError("an EngineProcess serves one event loop")
        loop.add_reader(self._conn.fileno(), self._on_readable)
        self._reading = loop

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                self._handle(self._conn.recv())
        except (EOFError, OSError):
            self._engine_died()

    def _read_until_drained(self, timeout: float | None) -> None:
        try:
            while not self._drained.is_set() and self._conn.poll(timeout):
                self._handle(self._conn.recv())
        except (EOFError, OSError):
            self._engine_died()

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "events":
            self._stats = message[2]
            self.tickets.deliver(message[1])
        elif kind == "drained":
            self._drained.set()

    def _engine_died(self) -> None:
        if self._dead:
            return
        self._dead = True
        loop = self._reading
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.remove_reader, self._conn.fileno())
        if not self._drained.is_set():
            logger.error("the engine process exited (code %s); failing the requests in flight",
                         self._process.exitcode)
            self.tickets.fail_all()
        self._drained.set()


# ------------------------------------------------------------------------------------------------ the child
def serve_engine(conn: Connection, factory: ModelFactory, max_batch_size: int, max_length: int,
                 threads: int | None) -> None:
    """The child's main: load the model, then run the batch loop until drained (or the parent is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(fmt="%(asctime)s %(levelname)s [engine] %(message)s")  # a fresh (spawned) process
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        model, tokenizer = factory()
        engine = Engine(model, tokenizer, max_batch_size=max_batch_size, max_length=max_length)
    except BaseException:
        conn.send(("failed", traceback.format_exc()))
        return
    loop = BatchLoop(engine, max_queue=None)  # the parent enforces max_queue before a request crosses over
    conn.send(("ready", loop.stats))
    try:
        _run(conn, loop)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone: nobody is left to answer


def _run(conn: Connection, loop: BatchLoop) -> None:
    draining = False
    while True:
        while conn.poll(0 if loop.busy or draining else None):  # wait for a message only when there is no work
            message = conn.recv()
            if message[0] == "submit":
                _, request_id, prompt_ids, config = message
                try:
                    loop.enqueue(request_id, loop.engine.new_request(prompt_ids, config))
                except Exception:  # the parent checked the prompt; anything else is this request's failure
                    logger.exception("request %d refused", request_id)
                    conn.send(("events", [(request_id, Event("", "error"))], loop.stats))
            elif message[0] == "cancel":
                loop.cancel(message[1])
            elif message[0] == "drain":
                draining = True
        if loop.busy:
            try:
                events = loop.step()
            except Exception:
                logger.exception("generation step failed")
                events = loop.fail_all()
            conn.send(("events", events, loop.stats))
        elif draining:
            conn.send(("drained",))
            return
