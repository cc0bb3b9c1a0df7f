"""Soak: hundreds of requests through the real app on a real uvicorn socket, with its model in an engine process;
long prompts, clients that disconnect (mid-stream, or while waiting for a whole answer), and the engine killed
mid-run.

Every request must end with the generator's full answer or a clear error, the server must come back, /health
must be truthful throughout (200 exactly when it says "ok", and then with a live engine), and nothing may leak
(rows, queue and tickets back to zero). Bounded: 300 requests, loopback only, well under a minute on 2 cores.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from tencentpretrain.generation import GenerationConfig, SamplingParams, generate
from tencentpretrain.serving.engine_process import RestartPolicy
from tests.serving.helpers import make_process_app, running, tiny_model_and_tokenizer
from tests.serving.test_engine_process import long_prompts, wait_for_health

REQUESTS = 300
CLIENTS = 12
KILL_AFTER = 100  # finished requests before the engine is killed
SHORT_PROMPTS = ["北京", "今天", "你好", "上海是", "中国的首都"]
SHORT_TOKENS, LONG_TOKENS = 12, 4
RETRY_S, RETRIES = 0.25, 240  # a client told 429/503 waits and asks again, as a real one would


@dataclass
class Outcome:
    kind: str  # "full" (the generator's answer), "error" (a clear error), "disconnected", or "wrong"
    detail: str
    finished_at: float
    refusals: int = 0  # 429/503 answers before this one


class HealthWatch:
    """Polls /health in a thread and records every answer that is not truthful."""

    def __init__(self, url: str) -> None:
        self.url, self.seen, self.untruthful = url, set(), []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.wait(0.2):
                r = client.get(self.url + "/health")
                report = r.json()
                self.seen.add(report["status"])
                serving = report["status"] == "ok"
                if r.status_code != (200 if serving else 503) or (serving and report["engine"] != "alive"):
                    self.untruthful.append((r.status_code, report))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


_clients = threading.local()


def client() -> httpx.Client:
    """This thread's HTTP client (a new ``httpx.Client`` per request costs milliseconds of CPU)."""
    if not hasattr(_clients, "client"):
        _clients.client = httpx.Client(timeout=60)
    return _clients.client


def ask(url: str, job: int, prompt: str, expected: str) -> Outcome:
    """One client: a plain completion, a streamed one, a stream it leaves after the first chunk, or a plain one
    it stops waiting for after 0.3 s (queued or generating)."""
    style = ("plain", "stream", "disconnect", "plain", "stream", "give up")[job % 6]
    body = {"prompt": prompt, "max_tokens": LONG_TOKENS if len(prompt) > 100 else SHORT_TOKENS, "temperature": 0}
    if style in ("disconnect", "give up"):
        body["max_tokens"] = 500
    for refusals in range(RETRIES):
        if style == "give up":
            try:
                r = client().post(url + "/v1/completions", json=body, timeout=0.3)
            except httpx.TimeoutException:
                return Outcome("disconnected", "", time.time(), refusals)
            if r.status_code in (429, 503):
                time.sleep(RETRY_S)
                continue
            clear = r.status_code == 500 and r.json()["error"]["message"]  # in flight when the engine died
            return Outcome("error" if clear else "wrong", f"HTTP {r.status_code} within 0.3 s", time.time(), refusals)
        if style == "plain":
            r = client().post(url + "/v1/completions", json=body)
            if r.status_code in (429, 503):
                time.sleep(RETRY_S)
                continue
            if r.status_code == 200:
                text = r.json()["choices"][0]["text"]
                return Outcome("full" if text == expected else "wrong", text, time.time(), refusals)
            message = r.json()["error"]["message"]
            return Outcome("error" if r.status_code == 500 and message else "wrong", message, time.time(), refusals)
        with client().stream("POST", url + "/v1/completions", json={**body, "stream": True}) as r:
            if r.status_code in (429, 503):
                r.read()
                time.sleep(RETRY_S)
                continue
            if r.status_code != 200:
                return Outcome("wrong", f"HTTP {r.status_code}", time.time(), refusals)
            text, done, error = "", False, ""
            for line in r.iter_lines():
                if style == "disconnect" and line.startswith("data: {"):
                    return Outcome("disconnected", "", time.time(), refusals)  # leaves mid-stream
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        error = chunk["error"]["message"]
                    else:
                        text += chunk["choices"][0]["text"]
            if error:
                return Outcome("error", error, time.time(), refusals)
            return Outcome("full" if done and text == expected else "wrong", text, time.time(), refusals)
    return Outcome("wrong", f"refused {RETRIES} times", time.time(), RETRIES)


@pytest.mark.slow
def test_soak_long_prompts_disconnects_and_a_killed_engine():
    model, tok = tiny_model_and_tokenizer()
    greedy = SamplingParams(temperature=0)
    longs = long_prompts(tok, 3, 1200)
    expected = dict(zip(SHORT_PROMPTS, (c.text for c in generate(
        model, tok, SHORT_PROMPTS, GenerationConfig(max_new_tokens=SHORT_TOKENS, sampling=greedy), max_length=2048))))
    expected.update(zip(longs, (c.text for c in generate(
        model, tok, longs, GenerationConfig(max_new_tokens=LONG_TOKENS, sampling=greedy), max_length=2048))))
    prompts = SHORT_PROMPTS * 3 + longs  # one job in six has a long prompt
    app = make_process_app(tiny_model_and_tokenizer, tok, context_length=2048, max_batch_size=4, max_queue=16,
                           restart=RestartPolicy(backoff_s=0.2))
    started = time.time()
    with running(app) as url:
        first_pid = wait_for_health(url, "ok")["engine_pid"]
        watch = HealthWatch(url)
        finished, killed_at, lock = [0], [], threading.Lock()

        def job(i: int) -> Outcome:
            prompt = prompts[i % len(prompts)]
            outcome = ask(url, i, prompt, expected[prompt])
            with lock:
                finished[0] += 1
                if finished[0] == KILL_AFTER:
                    killed_at.append(time.time())
                    os.kill(first_pid, signal.SIGKILL)
            return outcome

        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            outcomes = list(pool.map(job, range(REQUESTS)))
        settled = wait_for_health(url, "ok")
        deadline = time.time() + 20  # a disconnected stream's row is freed at the engine's next step
        while (settled["active"], settled["waiting"], settled["in_flight"]) != (0, 0, 0) and time.time() < deadline:
            time.sleep(0.05)
            settled = wait_for_health(url, "ok")
        watch.stop()
    elapsed = time.time() - started

    kinds = [o.kind for o in outcomes]
    assert kinds.count("wrong") == 0, [o for o in outcomes if o.kind == "wrong"][:5]
    leaving = REQUESTS // 3  # one in three clients leaves early; at the kill some of those get the error first
    assert leaving - kinds.count("error") <= kinds.count("disconnected") <= leaving
    # The errors are the requests in flight when the engine died: at most every row and queue place.
    assert 1 <= kinds.count("error") <= 4 + 16, kinds.count("error")
    assert all(o.finished_at >= killed_at[0] - 1 for o in outcomes if o.kind == "error")
    assert sum(o.kind == "full" and o.finished_at > killed_at[0] for o in outcomes) >= 50  # it came back
    assert sum(o.refusals for o in outcomes) > 0  # clients were told to wait while it restarted
    assert watch.untruthful == [] and {"ok", "restarting"} <= watch.seen
    assert settled["restarts"] == 1 and settled["engine_pid"] != first_pid
    assert (settled["active"], settled["waiting"], settled["in_flight"]) == (0, 0, 0)
    assert len(app.state.server.scheduler.tickets) == 0
    print(f"soak: {REQUESTS} requests in {elapsed:.1f} s; {kinds.count('full')} full, {kinds.count('error')} "
          f"errors at the kill, {sum(o.refusals for o in outcomes)} refusals while restarting")
