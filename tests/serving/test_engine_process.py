"""The server with its model in an engine process (what inference/llama_server.py runs by default)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time

import httpx
import pytest
import torch

from tencentpretrain.generation import GenerationConfig, SamplingParams, generate
from tencentpretrain.serving.engine_process import EngineProcess
from tests.serving.helpers import failing_factory, make_process_app, running, tiny_model_and_tokenizer

pytestmark = pytest.mark.slow  # every test spawns an engine process


def stream_text(url: str, body: dict) -> tuple[str, str]:
    """(text, finish_reason) of a streamed completion."""
    text, finish = "", ""
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                text += choice["text"]
                finish = choice["finish_reason"] or finish
    return text, finish


def test_concurrent_requests_match_the_generator_and_disconnects_free_rows():
    model, tok = tiny_model_and_tokenizer()
    prompts = ["北京是中国的首都", "今天", "你好"]
    sampling = SamplingParams(temperature=1.0, top_k=30, seed=7)
    alone = [generate(model, tok, [p], GenerationConfig(max_new_tokens=24, sampling=sampling))[0].text
             for p in prompts]
    app = make_process_app(tiny_model_and_tokenizer, tok, max_batch_size=2, context_length=4000)
    with running(app) as url:
        body = {"max_tokens": 24, "temperature": 1.0, "top_k": 30, "seed": 7}
        with concurrent.futures.ThreadPoolExecutor(6) as pool:  # more requests than rows: some wait
            together = list(pool.map(lambda p: stream_text(url, {**body, "prompt": p})[0], prompts * 2))
        assert together == alone * 2
        plain = httpx.post(url + "/v1/completions", json={**body, "prompt": prompts[0]}, timeout=60).json()
        assert plain["choices"][0]["text"] == alone[0]

        with httpx.stream("POST", url + "/v1/completions", timeout=60,
                          json={"prompt": "北京", "max_tokens": 3000, "stream": True, "temperature": 0}) as r:
            next(r.iter_lines())  # generation has started; then the client goes away
        deadline = time.time() + 20
        while httpx.get(url + "/health").json()["active"] and time.time() < deadline:
            time.sleep(0.05)
        assert httpx.get(url + "/health").json()["active"] == 0


def test_a_dead_engine_fails_requests_in_flight_and_refuses_new_ones():
    _, tok = tiny_model_and_tokenizer()
    app = make_process_app(tiny_model_and_tokenizer, tok, context_length=4000)
    engine = app.state.server.scheduler
    with running(app) as url:
        with httpx.stream("POST", url + "/v1/completions", timeout=60,
                          json={"prompt": "北京", "max_tokens": 3000, "stream": True, "temperature": 0}) as r:
            lines = r.iter_lines()
            next(lines)
            os.kill(engine._process.pid, signal.SIGKILL)
            rest = list(lines)
        last = [json.loads(x[6:]) for x in rest if x.startswith("data: {")][-1]
        assert last["error"]["type"] == "server_error"  # the stream ends with an error, not a silent cut
        refused = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=60)
        assert refused.status_code == 503 and "engine" in refused.json()["error"]["message"]


def test_a_model_that_cannot_load_is_an_error_at_start():
    with pytest.raises(RuntimeError, match="no such checkpoint: missing.bin"):
        EngineProcess(failing_factory, max_batch_size=1, max_length=8)
    assert torch.get_num_threads() >= 1  # the parent is untouched
