"""Starting the HTTP server: build the scheduler and app over a loaded model, run uvicorn.

uvicorn handles SIGTERM/SIGINT gracefully: it stops accepting connections, lets in-flight requests finish, then
runs the app's shutdown, which drains the scheduler; the process then exits 0. Shutdown never waits on a dead
engine: its requests have already ended with an error, and a child that does not exit is terminated.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from fastapi import FastAPI

from tencentpretrain.generation.engine import Engine
from tencentpretrain.models.model import Model
from tencentpretrain.serving.app import Server, ServerConfig, create_app
from tencentpretrain.serving.engine_process import EngineProcess, ModelFactory, RestartPolicy
from tencentpretrain.serving.scheduler import Scheduler
from tencentpretrain.tokenizers.base import Tokenizer
from tencentpretrain.tokenizers.templates import Template

logger = logging.getLogger(__name__)


def build_app(
    model: Model, tokenizer: Tokenizer, template: Template, config: ServerConfig, *, max_queue: int = 64
) -> FastAPI:
    """The app over ``model`` in this process: a continuous-batching scheduler thread with
    ``config.max_batch_size`` rows of ``config.context_length`` tokens each."""
    engine = Engine(model, tokenizer, max_batch_size=config.max_batch_size, max_length=config.context_length)
    return create_app(Server(Scheduler(engine, max_queue=max_queue), tokenizer, template, config))


def build_app_with_engine_process(
    factory: ModelFactory, tokenizer: Tokenizer, template: Template, config: ServerConfig, *, max_queue: int = 64,
    threads: int | None = None, restart: RestartPolicy | None = None,
) -> FastAPI:
    """The app with the model in a process of its own (``EngineProcess``), built there by ``factory`` and built
    again when that process dies (``restart``, default ``RestartPolicy()``); returns once the model is loaded."""
    engine = EngineProcess(factory, max_batch_size=config.max_batch_size, max_length=config.context_length,
                           max_queue=max_queue, threads=threads, restart=restart)
    return create_app(Server(engine, tokenizer, template, config))


def default_model_threads() -> int:
    """Torch threads for the model in a server: all cores but one. The event loop, the HTTP parsing and the
    SSE encoding need a core of their own; when torch's threads share every core with them, its thread pool
    waits on descheduled threads at every operation (measured on 2 cores: 1 thread streamed 1.3x faster to
    one client and 1.6x faster to eight than 2 threads)."""
    return max(1, (os.cpu_count() or 2) - 1)


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8888) -> None:
    """Run ``app`` with uvicorn until SIGTERM/SIGINT (in-flight requests finish first)."""
    import uvicorn

    # uvicorn re-raises the signal it caught once shutdown is complete; exit 0 then (a clean drain).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logger.info("serving on http://%s:%d (web chat at /, OpenAI API at /v1)", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=None)
