"""The HTTP API through httpx's ASGI transport: schemas, streaming text, legacy /chat and error codes."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tencentpretrain.generation import GenerationConfig, generate
from tests.generation.scripted import CHINESE_WITH_BYTES, scripted_model, tiny_model, tiny_tokenizer
from tests.serving.helpers import make_app


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def scripted(tok):
    """A model forced to answer CHINESE_WITH_BYTES (byte-fallback pieces) then eos, after the prompt
    "User: 你好\\nBot:"."""
    from tencentpretrain.generation.chat import chat_prompt_ids
    from tencentpretrain.tokenizers.templates import get_template

    prompt = chat_prompt_ids(tok, get_template("user_bot"), [{"role": "user", "content": "你好"}])
    script = tok.encode(CHINESE_WITH_BYTES) + [tok.eos_id]
    return scripted_model(tok.vocab_size, script, len(prompt))


def call(app, method, path, **kwargs):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            return await client.request(method, path, **kwargs)
    return asyncio.run(go())


def sse_events(response):
    events = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


CHAT = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 40}


def test_chat_completion_streamed_equals_non_streamed_equals_decode(scripted, tok):
    app = make_app(scripted, tok)
    plain = call(app, "POST", "/v1/chat/completions", json=CHAT)
    assert plain.status_code == 200
    body = plain.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": CHINESE_WITH_BYTES}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == len(tok.encode(CHINESE_WITH_BYTES))
    streamed = call(app, "POST", "/v1/chat/completions", json={**CHAT, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = sse_events(streamed)
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert "".join(deltas) == CHINESE_WITH_BYTES
    assert len([d for d in deltas if d]) > 3 and all("\ufffd" not in d for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_completions_match_the_generator(tok):
    model = tiny_model(tok.vocab_size)
    app = make_app(model, tok)
    expected = generate(model, tok, ["北京是"], GenerationConfig(max_new_tokens=12))[0]
    r = call(app, "POST", "/v1/completions", json={"prompt": "北京是", "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200
    assert r.json()["choices"][0]["text"] == expected.text
    assert r.json()["usage"]["completion_tokens"] == len(expected.token_ids)
    s = call(app, "POST", "/v1/completions", json={"prompt": "北京是", "max_tokens": 12, "stream": True})
    assert "".join(c["choices"][0]["text"] for c in sse_events(s)) == expected.text


def test_legacy_chat_answers_json_with_echo_and_completion(scripted, tok):
    app = make_app(scripted, tok)
    r = call(app, "POST", "/chat", json={"question": ["你好", "你好"], "max_tokens": 40})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "success"
    assert body["completion"] == [CHINESE_WITH_BYTES] * 2
    assert body["answer"] == ["User: 你好\nBot:" + CHINESE_WITH_BYTES] * 2


def test_models_health_and_page(tok):
    app = make_app(tiny_model(tok.vocab_size), tok)
    assert call(app, "GET", "/v1/models").json()["data"][0]["id"] == "tiny"
    assert call(app, "GET", "/health").json()["status"] == "ok"
    page = call(app, "GET", "/")
    assert page.status_code == 200 and "/v1/chat/completions" in page.text and "<html" in page.text


@pytest.mark.parametrize("path,body,status,needle", [
    ("/v1/completions", b"{not json", 400, "not valid JSON"),
    ("/v1/completions", {"max_tokens": 3}, 400, "'prompt'"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, 400, "at least 1"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 200}, 400, "context of 96"),
    ("/v1/completions", {"prompt": "hi", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": "3"}, 400, "integer"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "bot", "content": "x"}]}, 400, "role"),
    ("/chat", {}, 400, "question"),
    ("/chat", {"question": ["a"] * 5}, 400, "batch_size"),
])
def test_bad_requests_are_400_with_the_reason(tok, path, body, status, needle):
    app = make_app(tiny_model(tok.vocab_size), tok)
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = call(app, "POST", path, **kwargs)
    assert r.status_code == status
    text = json.dumps(r.json(), ensure_ascii=False)
    assert needle in text
    if path == "/chat":
        assert r.json()["status"] == "error" and r.json()["answer"] == ""


def test_prompt_plus_max_tokens_error_names_both_numbers(tok):
    app = make_app(tiny_model(tok.vocab_size), tok)
    r = call(app, "POST", "/v1/completions", json={"prompt": "hi", "max_tokens": 95})
    prompt_tokens = 1 + len(tok.encode("hi"))
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert f"{prompt_tokens} tokens" in message and "max_tokens is 95" in message


def test_api_key_is_required_when_set(tok):
    app = make_app(tiny_model(tok.vocab_size), tok, api_key="s3cret")
    body = {"prompt": "hi", "max_tokens": 2}
    assert call(app, "POST", "/v1/completions", json=body).status_code == 401
    assert call(app, "POST", "/v1/completions", json=body,
                headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = call(app, "POST", "/v1/completions", json=body, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert call(app, "GET", "/health").status_code == 200


def test_full_queue_is_429(tok):
    app = make_app(tiny_model(tok.vocab_size), tok, max_batch_size=1, max_queue=1)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            body = {"prompt": "hi", "max_tokens": 60, "temperature": 0}
            return await asyncio.gather(*(client.post("/v1/completions", json=body) for _ in range(6)))
    codes = sorted(r.status_code for r in asyncio.run(go()))
    assert 429 in codes and 200 in codes
