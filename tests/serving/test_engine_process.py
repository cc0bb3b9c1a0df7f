"""The server with its model in an engine process (what inference/llama_server.py runs by default)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import os
import signal
import time

import httpx
import pytest
import torch

from tencentpretrain.generation import GenerationConfig, SamplingParams, generate
from tencentpretrain.generation.generate import encode_prompt
from tencentpretrain.serving.engine_process import EngineProcess, RestartPolicy
from tests.serving.helpers import (
    factory_until,
    failing_factory,
    launch_llama_server,
    make_process_app,
    running,
    tiny_model_and_tokenizer,
)

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


def wait_for_health(url: str, status: str, timeout: float = 60) -> dict:
    """Poll /health until it reports ``status``; its body then. The HTTP status must agree with the body."""
    deadline = time.time() + timeout
    while True:
        r = httpx.get(url + "/health", timeout=10)
        report = r.json()
        assert r.status_code == (200 if report["status"] == "ok" else 503), report
        if report["status"] == status:
            return report
        assert time.time() < deadline, f"/health still says {report} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_engine_fails_requests_in_flight_and_is_restarted():
    model, tok = tiny_model_and_tokenizer()
    greedy = GenerationConfig(max_new_tokens=8, sampling=SamplingParams(temperature=0))
    expected = generate(model, tok, ["你好"], greedy)[0].text
    app = make_process_app(tiny_model_and_tokenizer, tok, context_length=4000,
                           restart=RestartPolicy(backoff_s=0.5))
    with running(app) as url:
        first = wait_for_health(url, "ok")
        assert first["engine"] == "alive" and first["restarts"] == 0
        with httpx.stream("POST", url + "/v1/completions", timeout=60,
                          json={"prompt": "北京", "max_tokens": 3000, "stream": True, "temperature": 0}) as r:
            lines = r.iter_lines()
            next(lines)
            os.kill(first["engine_pid"], signal.SIGKILL)
            rest = list(lines)
        last = [json.loads(x[6:]) for x in rest if x.startswith("data: {")][-1]
        assert last["error"]["type"] == "server_error"  # the stream ends with an error, not a silent cut
        down = httpx.get(url + "/health", timeout=10)
        assert down.status_code == 503 and down.json()["status"] == "restarting"
        assert down.json()["engine"] == "down" and down.json()["in_flight"] == 0
        refused = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=60)
        assert refused.status_code == 503 and "restarting" in refused.json()["error"]["message"]

        back = wait_for_health(url, "ok")
        assert back["restarts"] == 1 and back["engine_pid"] != first["engine_pid"]
        again = httpx.post(url + "/v1/completions", json={"prompt": "你好", "max_tokens": 8, "temperature": 0},
                           timeout=60)
        assert again.status_code == 200 and again.json()["choices"][0]["text"] == expected


@pytest.mark.slow
def test_an_engine_that_cannot_come_back_is_given_up_and_shutdown_still_returns(tmp_path):
    _, tok = tiny_model_and_tokenizer()
    broken = tmp_path / "checkpoint-gone"
    app = make_process_app(functools.partial(factory_until, str(broken)), tok,
                           restart=RestartPolicy(max_restarts=2, backoff_s=0.05))
    with running(app) as url:
        pid = wait_for_health(url, "ok")["engine_pid"]
        broken.touch()  # from now on the model cannot load
        os.kill(pid, signal.SIGKILL)
        report = wait_for_health(url, "failed")
        assert report["engine"] == "down" and report["restarts"] == 0
        refused = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=60)
        assert refused.status_code == 503 and "could not be restarted" in refused.json()["error"]["message"]
        started = time.time()
    assert time.time() - started < 20  # the shutdown (drain) did not wait on the dead engine


def test_a_huge_stop_list_crosses_the_pipe_whole_under_uvloop():
    """One message far larger than a pipe's buffer, sent from a uvloop event loop (uvicorn's default): the
    Trust issue's 60,000 stop strings. It must arrive whole, and the answer be the generator's."""
    uvloop = pytest.importorskip("uvloop")
    model, tok = tiny_model_and_tokenizer()
    stops = tuple(f"\x00never{i}" for i in range(60_000))
    config = GenerationConfig(max_new_tokens=6, sampling=SamplingParams(temperature=0), stop_strings=stops)
    expected = generate(model, tok, ["北京"], config)[0].text
    engine = EngineProcess(tiny_model_and_tokenizer, max_batch_size=2, max_length=64, threads=1)

    async def ask() -> list:
        tickets = [engine.submit(encode_prompt(tok, "北京"), config) for _ in range(3)]  # three in a row: 3 x ~1 MB
        answers = []
        for ticket in tickets:
            events = [await asyncio.wait_for(ticket.events.get(), 60)]
            while events[-1].finish_reason is None:
                events.append(await asyncio.wait_for(ticket.events.get(), 60))
            answers.append(("".join(e.text for e in events), events[-1].finish_reason))
        return answers

    try:
        answers = uvloop.run(ask())
        assert engine.health()["status"] == "ok"
    finally:
        engine.drain(30)
    assert answers == [(expected, "length")] * 3
    assert engine.health()["status"] == "stopped" and len(engine.tickets) == 0


def test_restart_backoff_doubles_up_to_its_cap():
    policy = RestartPolicy(backoff_s=0.5, max_backoff_s=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_model_that_cannot_load_is_an_error_at_start():
    with pytest.raises(RuntimeError, match="no such checkpoint: missing.bin"):
        EngineProcess(failing_factory, max_batch_size=1, max_length=8)
    assert torch.get_num_threads() >= 1  # the parent is untouched


def long_prompts(tok, count: int, tokens: int) -> list[str]:
    """``count`` distinct prompts of about ``tokens`` tokens each."""
    base = "北京是中国的首都，今天天气很好。"
    unit = len(tok.encode(base))
    return [f"{i}号：" + base * (tokens // unit) for i in range(count)]


@pytest.mark.slow
def test_seventy_concurrent_long_prompts_are_served_or_told_to_wait():
    """The Trust issue's report: 70 concurrent ~1,700-token prompts at a 2048 context. A full pipe to the
    engine must mean waiting (or 429 past max_queue), never a dead server."""
    model, tok = tiny_model_and_tokenizer()
    prompts = long_prompts(tok, 5, 1700)
    greedy = SamplingParams(temperature=0)
    alone = {p: generate(model, tok, [p], GenerationConfig(max_new_tokens=4, sampling=greedy),
                          max_length=2048)[0].text
             for p in prompts}
    app = make_process_app(tiny_model_and_tokenizer, tok, context_length=2048, max_queue=64)
    with running(app) as url:
        def ask(prompt: str) -> tuple[str, httpx.Response]:
            body = {"prompt": prompt, "max_tokens": 4, "temperature": 0}
            return prompt, httpx.post(url + "/v1/completions", json=body, timeout=120)

        with concurrent.futures.ThreadPoolExecutor(70) as pool:
            answers = list(pool.map(ask, prompts * 14))
        codes = [r.status_code for _, r in answers]
        assert set(codes) <= {200, 429}, codes
        assert codes.count(200) >= 4 + 60  # every row and most of the queue were served
        for prompt, r in answers:
            if r.status_code == 200:
                assert r.json()["choices"][0]["text"] == alone[prompt]
        health = httpx.get(url + "/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        after = httpx.post(url + "/v1/completions", json={"prompt": prompts[0], "max_tokens": 4, "temperature": 0},
                           timeout=60)
        assert after.status_code == 200 and after.json()["choices"][0]["text"] == alone[prompts[0]]


@pytest.mark.slow
def test_sigterm_while_the_engine_restarts_exits_cleanly(tmp_path):
    """inference/llama_server.py: the engine is killed, and the server gets SIGTERM while a new one loads."""
    proc, url = launch_llama_server(tmp_path, "--threads", "1")
    try:
        deadline = time.time() + 60
        while True:
            try:
                report = httpx.get(url + "/health", timeout=10).json()
                break
            except httpx.TransportError:
                assert time.time() < deadline and proc.poll() is None, "the server did not start"
                time.sleep(0.2)
        os.kill(report["engine_pid"], signal.SIGKILL)
        wait_for_health(url, "restarting")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        print(proc.stdout.read())
