"""Running the app in tests: a real uvicorn server on a free 127.0.0.1 port, in a thread; or the real
``inference/llama_server.py`` in a process of its own."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import uvicorn

from tencentpretrain.generation.sampling import SamplingParams
from tencentpretrain.serving.app import ServerConfig
from tencentpretrain.serving.server import build_app, build_app_with_engine_process
from tencentpretrain.tokenizers.templates import get_template


def server_config(**overrides) -> tuple[ServerConfig, int]:
    """(config, max_queue) of the test apps: a 96-token context, 4 rows, 8 waiting requests at most."""
    values = {"model_name": "tiny", "context_length": 96, "default_max_tokens": 16, "defaults": SamplingParams(),
              "max_batch_size": 4}
    max_queue = overrides.pop("max_queue", 8)
    values.update(overrides)
    return ServerConfig(**values), max_queue


def make_app(model, tokenizer, **overrides):
    config, max_queue = server_config(**overrides)
    return build_app(model, tokenizer, get_template("user_bot"), config, max_queue=max_queue)


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


def make_process_app(factory, tokenizer, **overrides):
    """``make_app`` with the model built by ``factory`` in an engine process (``EngineProcess``)."""
    restart = overrides.pop("restart", None)
    config, max_queue = server_config(**overrides)
    return build_app_with_engine_process(factory, tokenizer, get_template("user_bot"), config, max_queue=max_queue,
                                         threads=1, restart=restart)


def tiny_model_and_tokenizer(seed: int = 0):
    """A factory for engine processes (module level, so the child can unpickle it)."""
    import torch

    from tests.generation.scripted import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    return tiny_model(tokenizer.vocab_size), tokenizer


def failing_factory():
    raise FileNotFoundError("no such checkpoint: missing.bin")


def factory_until(marker: str):
    """``tiny_model_and_tokenizer`` until the file ``marker`` exists; then the model cannot load (a checkpoint
    that went away under a running server)."""
    import os

    if os.path.exists(marker):
        raise FileNotFoundError(f"no such checkpoint: {marker}")
    return tiny_model_and_tokenizer()


def launch_llama_server(tmp_path, *flags: str) -> tuple[subprocess.Popen, str]:
    """(process, url) of ``inference/llama_server.py`` serving a tiny saved model on a free port, with ``flags``
    added; the caller waits for it to come up and stops it."""
    from tencentpretrain.checkpoint import save_checkpoint
    from tencentpretrain.config import save_model_config
    from tests.generation.scripted import SPM_PATH, tiny_model, tiny_tokenizer
    from tests.helpers import REPO_ROOT, tiny_llama_config

    save_checkpoint(tiny_model(tiny_tokenizer().vocab_size), str(tmp_path / "model.bin"))
    save_model_config(tiny_llama_config(), tmp_path / "config.json")
    port = free_port()
    cmd = [sys.executable, os.path.join(REPO_ROOT, "inference", "llama_server.py"),
           "--load_model_path", str(tmp_path / "model.bin"), "--config_path", str(tmp_path / "config.json"),
           "--spm_model_path", SPM_PATH, "--port", str(port), "--seq_length", "512", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, f"http://127.0.0.1:{port}"
