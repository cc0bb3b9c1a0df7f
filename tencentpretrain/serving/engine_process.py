"""The generation engine in a process of its own, behind the same interface as ``Scheduler``, and restarted when
it dies.

In one process, the decode loop and the HTTP side share the GIL: every streamed chunk the event loop writes
holds it for some microseconds, and the engine's thread, which needs it between two torch operations, waits.
Here the model, the ``Engine`` and its ``BatchLoop`` live in a child process (started with ``spawn``: no forked
torch or OpenMP state), and the two sides talk over two one-way pipes:

    parent -> child   ("submit", id, prompt_ids, GenerationConfig) | ("cancel", id) | ("drain",)
    child -> parent   ("ready", stats) | ("failed", message) | ("events", [(id, Event)], stats) | ("drained",)

The transport cannot lose or tear a message: in the parent, each pipe belongs to one thread that does blocking,
whole-message I/O (``ChildChannel``), and the event loop never touches either file descriptor (uvloop makes the
descriptors it watches non-blocking, and a non-blocking send that meets a full pipe stops half-way through a
message). Handlers only put messages on the writer's queue, which cannot grow without bound: at most
``max_batch_size + max_queue`` requests are in flight, and past that ``submit`` raises QueueFull (HTTP 429). A full
pipe means the writer waits for the child to read, never a failure.

Messages are pickled: both ends are processes of this server, and the pipes are private to them (the child
inherits them at spawn; nothing else can write to them).

The child blocks on its pipe when it has nothing to do, and otherwise reads what arrived between two decode
steps. It ignores SIGINT: Ctrl-C reaches the whole process group, and the parent, not the child, decides when
in-flight requests are done. If the child dies (killed, out of memory, a crash in torch), the requests in flight
end with an "error" event, new ones get ShuttingDown (HTTP 503) while a new child loads the model, and the
supervisor gives up (for good: HTTP 503 and an unhealthy ``/health``) only at the first death after
``RestartPolicy.max_restarts`` restarts within its window.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from tencentpretrain.cli import configure_logging
from tencentpretrain.generation.engine import Engine, GenerationConfig, check_prompt
from tencentpretrain.models.model import Model
from tencentpretrain.serving.scheduler import BatchLoop, Event, QueueFull, ShuttingDown, Ticket, TicketBook
from tencentpretrain.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)

ModelFactory = Callable[[], tuple[Model, Tokenizer]]  # picklable: it runs in the child
Message = tuple[Any, ...]

# The supervisor's states (``EngineProcess.state``); only "ok" takes requests.
OK, RESTARTING, FAILED, DRAINING, STOPPED = "ok", "restarting", "failed", "draining", "stopped"


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a dead engine process, and when to give up.

    The n-th death within ``window_s`` seconds waits ``backoff_s * 2**(n-1)`` seconds (at most ``max_backoff_s``)
    before the next start; a start that fails counts as a death. More than ``max_restarts`` deaths within the
    window: the server stops generating for good (HTTP 503, ``/health`` says "failed").
    """

    max_restarts: int = 5
    window_s: float = 600.0
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def delay(self, deaths: int) -> float:
        return min(self.backoff_s * 2 ** max(deaths - 1, 0), self.max_backoff_s)


class ChildChannel:
    """One engine process and its two pipes, seen from the parent.

    ``send`` only queues: a writer thread sends the queued messages in order with blocking sends (a full pipe
    makes it wait for the child to read). A reader thread receives the child's whole messages, keeps the last
    stats the child reported, and hands each message to ``on_message``; when the child's pipe closes (it exited
    or was killed) it calls ``on_exit`` once.

    Args:
        factory, max_batch_size, max_length, threads: what the child builds (see ``serve_engine``).
        start_timeout: seconds to wait for the model to load.
        stop: when set while the model loads, the start is abandoned (the server is shutting down).
    """

    def __init__(self, factory: ModelFactory, *, max_batch_size: int, max_length: int, threads: int | None,
                 start_timeout: float, stop: threading.Event | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        from_parent, self._to_child = context.Pipe(duplex=False)
        self._from_child, to_parent = context.Pipe(duplex=False)
        self.process = context.Process(
            target=serve_engine, name="generation-engine", daemon=True,
            args=(from_parent, to_parent, factory, max_batch_size, max_length, threads),
        )
        self.process.start()
        from_parent.close()  # the child's ends: once it exits, our reads see EOF and our sends a broken pipe
        to_parent.close()
        self.drained = threading.Event()
        self._outbox: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self.stats: dict[str, Any] = self._wait_ready(start_timeout, stop or threading.Event())

    def run(self, on_message: Callable[[Message], None], on_exit: Callable[[ChildChannel], None]) -> None:
        """Start the reader and writer threads."""
        threading.Thread(target=self._read, args=(on_message, on_exit), name="engine-reader", daemon=True).start()
        threading.Thread(target=self._write, name="engine-writer", daemon=True).start()

    def send(self, message: Message) -> None:
        """Queue ``message`` for the child (from any thread; never blocks). Dropped if the child is gone."""
        self._outbox.put(message)

    def close(self) -> None:
        """Let the writer thread finish once it has sent what is queued."""
        self._outbox.put(None)

    def stop(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the child to exit, then terminate it (then kill it)."""
        self.close()
        self.process.join(timeout)
        for end in (self.process.terminate, self.process.kill):
            if not self.process.is_alive():
                break
            logger.warning("the engine process (pid %s) did not exit; stopping it", self.process.pid)
            end()
            self.process.join(5)

    def _wait_ready(self, timeout: float, stop: threading.Event) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self._from_child.poll(0.1):
            if not self.process.is_alive() or time.monotonic() > deadline or stop.is_set():
                self.process.kill()
                self.process.join(5)
                reason = "the server is shutting down" if stop.is_set() else f"exit code {self.process.exitcode}"
                raise RuntimeError(f"the engine process did not start ({reason})")
        try:
            message = self._from_child.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise RuntimeError(f"the engine process did not start (exit code {self.process.exitcode})") from None
        if message[0] == "failed":
            self.process.join(10)
            raise RuntimeError(f"the engine process could not load the model:\n{message[1]}")
        return message[1]

    def _read(self, on_message: Callable[[Message], None], on_exit: Callable[[ChildChannel], None]) -> None:
        try:
            while True:
                message = self._from_child.recv()
                if message[0] == "drained":
                    self.drained.set()
                    continue
                if message[0] == "events":
                    self.stats = message[2]
                on_message(message)
        except (EOFError, OSError):
            pass  # the child has exited
        except Exception:
            logger.exception("could not handle a message from the engine process; stopping it")
            self.process.kill()
        self.process.join(5)
        if self.process.is_alive():  # it closed its pipe but lives on: no use to anyone
            self.process.kill()
            self.process.join(5)
        self._from_child.close()
        on_exit(self)
        self.drained.set()

    def _write(self) -> None:
        try:
            while (message := self._outbox.get()) is not None:
                self._to_child.send(message)
        except OSError:
            pass  # the child has exited; the reader reports it
        finally:
            self._to_child.close()


class EngineProcess:
    """Supervises the engine process: starts it, waits until its model is loaded, restarts it when it dies.

    Args:
        factory: builds (model, tokenizer) in the child; must be picklable (a module-level function, or a
            ``functools.partial`` of one).
        max_batch_size, max_length: the Engine's rows and context.
        max_queue: requests allowed to wait for a row; beyond that ``submit`` raises QueueFull.
        threads: torch threads of the child (None: torch's default).
        start_timeout: seconds to wait for the model to load.
        restart: when to restart a dead engine process and when to give up (None: ``RestartPolicy()``).
    """

    def __init__(self, factory: ModelFactory, *, max_batch_size: int, max_length: int, max_queue: int = 64,
                 threads: int | None = None, start_timeout: float = 600.0,
                 restart: RestartPolicy | None = None) -> None:
        self.max_batch_size, self.max_length, self.max_queue = max_batch_size, max_length, max_queue
        self.restart_policy = restart or RestartPolicy()
        self.tickets = TicketBook()
        self.restarts = 0  # engine processes started after the first
        self._start_args = {"factory": factory, "max_batch_size": max_batch_size, "max_length": max_length,
                            "threads": threads, "start_timeout": start_timeout}
        self._lock = threading.Lock()  # the state, the current child, and ticket creation
        self._stopping = threading.Event()  # drain has begun: no more restarts
        self._deaths: collections.deque[float] = collections.deque()
        self._supervisor: threading.Thread | None = None
        self._child = ChildChannel(**self._start_args)  # a model that cannot load is an error here, at start
        self.state = OK
        with self._lock:
            self._child.run(self._on_message, self._on_exit)

    # -------------------------------------------------------------------------------------------- handler side
    def submit(self, prompt_ids: list[int], config: GenerationConfig) -> Ticket:
        """Queue a request; raises QueueFull, ShuttingDown (also while the engine restarts), or ConfigError for
        a prompt the engine refuses."""
        check_prompt(prompt_ids, self.max_length)
        with self._lock:
            if self.state != OK:
                raise ShuttingDown(self._refusal())
            if len(self.tickets) >= self.max_batch_size + self.max_queue:
                raise QueueFull(f"{len(self.tickets) - self.max_batch_size} requests are already waiting "
                                f"(limit {self.max_queue})")
            ticket = self.tickets.new(self._cancel)
            self._child.send(("submit", ticket.request_id, list(prompt_ids), config))
        return ticket

    @property
    def stats(self) -> dict[str, Any]:
        """The engine's last reported rows in use ("active") and queue ("waiting"), and the requests this side
        holds ("in_flight": admitted, queued, or on their way to the engine)."""
        child = self._child.stats if self.state in (OK, DRAINING) else {"active": 0, "waiting": 0}
        return {"active": child["active"], "waiting": child["waiting"], "in_flight": len(self.tickets),
                "max_batch_size": self.max_batch_size, "max_queue": self.max_queue}

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports: the state ("ok" is the only one that takes requests), restarts, and stats."""
        alive = self.state in (OK, DRAINING) and self._child.process.is_alive()
        status = RESTARTING if self.state == OK and not alive else self.state  # the reader is about to notice
        return {"status": status, "engine": "alive" if alive else "down",
                "engine_pid": self._child.process.pid if alive else None, "restarts": self.restarts, **self.stats}

    def drain(self, timeout: float | None = None) -> None:
        """Accept nothing new, let the child finish everything admitted or queued, then let it exit. Returns
        within ``timeout`` (plus a few seconds to stop the child) even if the child does not answer."""
        with self._lock:
            serving = self.state == OK
            if self.state != STOPPED:
                self.state = DRAINING
            self._stopping.set()
            child = self._child
        if serving:
            child.send(("drain",))
            child.drained.wait(timeout)
        child.stop(10.0)
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        with self._lock:
            self.state = STOPPED
            self.tickets.fail_all()  # none are left after a drain, unless the child died or the timeout passed

    def _cancel(self, request_id: int) -> None:
        self._child.send(("cancel", request_id))

    def _refusal(self) -> str:
        if self.state == RESTARTING:
            return "the generation engine is restarting after a failure; retry in a few seconds"
        if self.state == FAILED:
            return "the generation engine has stopped and could not be restarted; see the server log"
        return "the server is shutting down"

    # -------------------------------------------------------------------------------------------- child side
    def _on_message(self, message: Message) -> None:
        if message[0] == "events":
            self.tickets.deliver(message[1])

    def _on_exit(self, child: ChildChannel) -> None:
        """The reader thread of ``child`` saw its pipe close: fail its requests, restart unless stopping."""
        with self._lock:
            if child is not self._child:
                return
            restart = not self._stopping.is_set()
            if restart:
                logger.error("the engine process exited (code %s); failing the %d requests in flight",
                             child.process.exitcode, len(self.tickets))
                self.state = RESTARTING
            self.tickets.fail_all()  # under the lock: no request can join the dead child after this
        if restart:
            self._supervisor = threading.Thread(target=self._restart, name="engine-supervisor", daemon=True)
            self._supervisor.start()

    def _restart(self) -> None:
        """Start a new child after a backoff; give up after too many deaths within the policy's window."""
        policy = self.restart_policy
        while True:
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and self._deaths[0] < now - policy.window_s:
                self._deaths.popleft()
            if len(self._deaths) > policy.max_restarts:
                logger.error("the engine process died %d times within %.0f s; not restarting it again",
                             len(self._deaths), policy.window_s)
                with self._lock:
                    if not self._stopping.is_set():
                        self.state = FAILED
                return
            delay = policy.delay(len(self._deaths))
            logger.warning("restarting the engine process in %.1f s", delay)
            if self._stopping.wait(delay):
                return
            try:
                child = ChildChannel(**self._start_args, stop=self._stopping)
            except RuntimeError:
                logger.exception("the engine process could not be restarted")
                if self._stopping.is_set():
                    return
                continue
            with self._lock:
                if self._stopping.is_set():
                    child.stop(0)
                    return
                self._child = child
                self.restarts += 1
                self.state = OK
                child.run(self._on_message, self._on_exit)
            logger.info("the engine process is back (pid %s)", child.process.pid)
            return


# ------------------------------------------------------------------------------------------------ the child
def serve_engine(from_parent: Connection, to_parent: Connection, factory: ModelFactory, max_batch_size: int,
                 max_length: int, threads: int | None) -> None:
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
        to_parent.send(("failed", traceback.format_exc()))
        return
    loop = BatchLoop(engine, max_queue=None)  # the parent enforces max_queue before a request crosses over
    to_parent.send(("ready", loop.stats))
    try:
        _run(from_parent, to_parent, loop)
    except (EOFError, OSError):
        pass  # the parent is gone: nobody is left to answer


def _run(from_parent: Connection, to_parent: Connection, loop: BatchLoop) -> None:
    """Read whole messages (blocking reads: a message the parent has begun is always finished), step, answer."""
    draining = False
    while True:
        while from_parent.poll(0 if loop.busy or draining else None):  # wait only when there is no work
            message = from_parent.recv()
            if message[0] == "submit":
                _, request_id, prompt_ids, config = message
                try:
                    loop.enqueue(request_id, loop.engine.new_request(prompt_ids, config))
                except Exception:  # the parent checked the prompt; anything else is this request's failure
                    logger.exception("request %d refused", request_id)
                    to_parent.send(("events", [(request_id, Event("", "error"))], loop.stats))
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
            to_parent.send(("events", events, loop.stats))
        elif draining:
            to_parent.send(("drained",))
            return
