"""The server on a real uvicorn socket: the official openai client, concurrency, disconnects, SIGTERM."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import httpx
import pytest

from tencentpretrain.generation import GenerationConfig, SamplingParams, generate
from tencentpretrain.generation.chat import chat_prompt_ids
from tencentpretrain.tokenizers.templates import get_template
from tests.generation.scripted import CHINESE_WITH_BYTES, scripted_model, tiny_model, tiny_tokenizer
from tests.serving.helpers import launch_llama_server, make_app, running

openai = pytest.importorskip("openai")


def test_openai_client_streamed_and_not():
    tok = tiny_tokenizer()
    prompt = chat_prompt_ids(tok, get_template("user_bot"), [{"role": "user", "content": "你好"}])
    model = scripted_model(tok.vocab_size, tok.encode(CHINESE_WITH_BYTES) + [tok.eos_id], len(prompt))
    with running(make_app(model, tok, api_key="k")) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="k")
        assert [m.id for m in client.models.list().data] == ["tiny"]
        messages = [{"role": "user", "content": "你好"}]
        reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=40)
        assert reply.choices[0].message.content == CHINESE_WITH_BYTES
        assert reply.choices[0].finish_reason == "stop"
        pieces = [c.choices[0].delta.content or "" for c in
                  client.chat.completions.create(model="tiny", messages=messages, max_tokens=40, stream=True)]
        assert "".join(pieces) == CHINESE_WITH_BYTES
        text = client.completions.create(model="tiny", prompt="北京", max_tokens=5).choices[0].text
        assert isinstance(text, str)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="bad").models.list()


def test_concurrent_requests_get_the_same_tokens_as_alone():
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size)
    prompts = ["北京是中国的首都", "今天"]
    alone = [generate(model, tok, [p], GenerationConfig(
        max_new_tokens=24, sampling=SamplingParams(temperature=1.0, top_k=30, seed=7)))[0].text for p in prompts]
    with running(make_app(model, tok)) as url:
        def ask(prompt):
            body = {"prompt": prompt, "max_tokens": 24, "temperature": 1.0, "top_k": 30, "seed": 7, "stream": True}
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
                return "".join(__import__("json").loads(line[6:])["choices"][0]["text"]
                               for line in r.iter_lines() if line.startswith("data: {"))
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            together = list(pool.map(ask, prompts * 2))
    assert together == alone * 2


def test_client_disconnect_frees_its_row():
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size)
    app = make_app(model, tok, max_batch_size=1, context_length=4000)
    with running(app) as url:
        body = {"prompt": "北京", "max_tokens": 3000, "stream": True, "temperature": 0}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            next(r.iter_lines())  # generation has started
        deadline = time.time() + 20
        while httpx.get(url + "/health").json()["active"] and time.time() < deadline:
            time.sleep(0.05)
        assert httpx.get(url + "/health").json()["active"] == 0
        ok = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 3}, timeout=60)
        assert ok.status_code == 200


@pytest.mark.slow
def test_server_entry_point_drains_on_sigterm(tmp_path):
    proc, url = launch_llama_server(tmp_path, "--temperature", "0")
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        body = {"prompt": "北京", "max_tokens": 200, "stream": True, "temperature": 0}
        chunks = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and not chunks:
                    proc.send_signal(signal.SIGTERM)  # mid-generation
                if line:
                    chunks.append(line)
        assert chunks[-1] == "data: [DONE]"
        final = __import__("json").loads([c for c in chunks if c.startswith("data: {")][-1][6:])
        assert final["choices"][0]["finish_reason"] in ("length", "stop")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        print(proc.stdout.read())


def test_client_that_leaves_a_non_streamed_request_with_n_choices_frees_every_row():
    tok = tiny_tokenizer()
    app = make_app(tiny_model(tok.vocab_size), tok, max_batch_size=4, context_length=4000)
    with running(app) as url:
        body = {"prompt": "北京", "max_tokens": 3000, "n": 3, "temperature": 0}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/completions", json=body, timeout=1.5)  # gives up; the connection closes
        deadline = time.time() + 3  # a disconnect is noticed within 0.25 s, also while tokens keep coming
        while httpx.get(url + "/health").json()["active"] and time.time() < deadline:
            time.sleep(0.05)
        assert httpx.get(url + "/health").json()["active"] == 0
