"""Running the app in tests: a real uvicorn server on a free 127.0.0.1 port, in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn

from tencentpretrain.data.templates import get_template
from tencentpretrain.generation.sampling import SamplingParams
from tencentpretrain.serving.app import ServerConfig
from tencentpretrain.serving.server import build_app


def make_app(model, tokenizer, **overrides):
    values = {"model_name": "tiny", "context_length": 96, "default_max_tokens": 16, "defaults": SamplingParams(),
              "max_batch_size": 4}
    max_queue = overrides.pop("max_queue", 8)
    values.update(overrides)
    return build_app(model, tokenizer, get_template("user_bot"), ServerConfig(**values), max_queue=max_queue)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app):
    """Serve ``app`` with uvicorn in a thread; yield its base URL; shut it down (draining) afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
