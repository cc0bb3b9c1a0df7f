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


# ------------------------------------------------------------------------------------------------ validation
BIG_BODY = b'{"prompt": "' + b"a" * (2 * 2**20) + b'"}'


@pytest.mark.parametrize("body,status,code,param", [
    ({"prompt": "hi", "top_k": 10**19}, 400, "invalid_value", "top_k"),
    ({"prompt": "hi", "seed": 2**64}, 400, "invalid_value", "seed"),
    ({"prompt": "hi", "seed": -1}, 400, "invalid_value", "seed"),
    (b'{"prompt": "hi", "repetition_penalty": NaN}', 400, "invalid_type", "repetition_penalty"),
    (b'{"prompt": "hi", "temperature": Infinity}', 400, "invalid_type", "temperature"),
    ({"prompt": "hi", "repetition_penalty": 0}, 400, "invalid_value", "repetition_penalty"),
    ({"prompt": "hi", "top_p": 1.5}, 400, "invalid_value", "top_p"),
    ({"prompt": "hi", "temperature": -1}, 400, "invalid_value", "temperature"),
    ({"prompt": "hi", "stream": "false"}, 400, "invalid_type", "stream"),
    ({"prompt": "hi", "echo": 1}, 400, "invalid_type", "echo"),
    ({"prompt": "hi", "n": 0}, 400, "invalid_value", "n"),
    ({"prompt": "hi", "logprobs": 21}, 400, "invalid_value", "logprobs"),
    ({"prompt": "hi", "presence_penalty": 0.5}, 400, "unsupported_parameter", "presence_penalty"),
    ({"prompt": "hi", "logit_bias": {"5": 10}}, 400, "unsupported_parameter", "logit_bias"),
    ({"prompt": "hi", "best_of": 3}, 400, "unsupported_parameter", "best_of"),
    ({"prompt": "hi", "suffix": "x"}, 400, "unsupported_parameter", "suffix"),
    ({"prompt": "hi", "frobnicate": 1}, 400, "unsupported_parameter", "frobnicate"),
    ({"prompt": "hi", "stream_options": {"include_usage": True}}, 400, "invalid_value", "stream_options"),
    ({"prompt": [1, 700]}, 400, "invalid_value", "prompt"),
    ({"prompt": [[1, 5], []]}, 400, "invalid_type", "prompt"),
    ({"prompt": "hi", "max_tokens": 200}, 400, "context_length_exceeded", "max_tokens"),
    ({"prompt": "hi", "max_tokens": 1, "n": 65}, 400, "invalid_value", "n"),
    (b'{"prompt": "\\ud800 lone surrogate"}', 400, "invalid_json", None),
    (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json", None),
    (BIG_BODY, 413, "request_too_large", None),
])
def test_every_field_is_checked_before_admission(tok, body, status, code, param):
    app = make_app(tiny_model(tok.vocab_size), tok, max_request_bytes=2**20)
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = call(app, "POST", "/v1/completions", **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == "invalid_request_error" and error["message"]
    assert app.state.server.scheduler.stats["active"] == 0


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi", "name": "bob"}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "echo": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "response_format": {"type": "json_object"}}),
])
def test_chat_fields_we_do_not_support_are_400(tok, path, body):
    app = make_app(tiny_model(tok.vocab_size), tok)
    r = call(app, "POST", path, json=body)
    assert r.status_code == 400, r.text
    assert isinstance(r.json()["error"]["code"], str) and r.json()["error"]["param"]


def test_neutral_values_of_unsupported_fields_and_nulls_are_accepted(tok):
    app = make_app(tiny_model(tok.vocab_size), tok)
    body = {"messages": [{"role": "developer", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "你"},
                                                      {"type": "text", "text": "好"}]}],
            "max_tokens": 2, "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "n": 1,
            "response_format": {"type": "text"}, "user": "u1", "stop": None, "seed": None, "model": "anything"}
    r = call(app, "POST", "/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    from tencentpretrain.generation.chat import chat_prompt_ids
    from tencentpretrain.tokenizers.templates import get_template

    expected = chat_prompt_ids(tok, get_template("user_bot"), [{"role": "system", "content": "be brief"},
                                                                 {"role": "user", "content": "你\n好"}])
    assert r.json()["usage"]["prompt_tokens"] == len(expected)


def test_models_by_id(tok):
    app = make_app(tiny_model(tok.vocab_size), tok)
    assert call(app, "GET", "/v1/models/tiny").json()["id"] == "tiny"
    missing = call(app, "GET", "/v1/models/gpt-4")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "北京是"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "北京是"}]}),
    ("/chat", {"question": "北京是"}),
])
def test_a_request_without_max_tokens_gets_what_fits(tok, path, body):
    """--seq_length 96 with the default of 256 new tokens: a request that does not ask for a length gets the
    rest of the context instead of a 400."""
    model = tiny_model(tok.vocab_size)
    app = make_app(model, tok, default_max_tokens=256)
    r = call(app, "POST", path, json={**body, "temperature": 0})
    assert r.status_code == 200, r.text
    from tencentpretrain.generation.chat import chat_prompt_ids
    from tencentpretrain.tokenizers.templates import get_template

    if path == "/v1/completions":
        prompt = [tok.bos_id, *tok.encode("北京是")]
        stops: tuple[str, ...] = ()
    else:
        prompt = chat_prompt_ids(tok, get_template("user_bot"), [{"role": "user", "content": "北京是"}])
        stops = ("User:",)
    expected = generate(model, tok, [prompt], GenerationConfig(max_new_tokens=96 - len(prompt),
                                                               stop_strings=stops))[0]
    text = r.json()["completion"][0] if path == "/chat" else (
        r.json()["choices"][0].get("text") or r.json()["choices"][0].get("message", {}).get("content"))
    assert text == expected.text
    if path != "/chat":
        assert r.json()["usage"]["completion_tokens"] == len(expected.token_ids)
    too_long = call(app, "POST", "/v1/completions", json={"prompt": [[1] * 96]})
    assert too_long.status_code == 400 and "no room" in too_long.json()["error"]["message"]


def test_completions_take_token_and_list_prompts_with_echo(tok):
    model = tiny_model(tok.vocab_size)
    app = make_app(model, tok)
    ids = [tok.bos_id, *tok.encode("北京是")]
    expected = generate(model, tok, [ids], GenerationConfig(max_new_tokens=5))[0].text
    r = call(app, "POST", "/v1/completions", json={"prompt": [ids, "北京是", ids], "max_tokens": 5, "echo": True,
                                                   "temperature": 0})
    assert r.status_code == 200, r.text
    texts = [c["text"] for c in r.json()["choices"]]
    assert texts == [tok.decode(ids) + expected, "北京是" + expected, tok.decode(ids) + expected]
    assert r.json()["usage"]["prompt_tokens"] == 3 * len(ids)
    streamed = call(app, "POST", "/v1/completions", json={"prompt": ids, "max_tokens": 5, "echo": True, "n": 2,
                                                          "temperature": 0, "stream": True,
                                                          "stream_options": {"include_usage": True}})
    chunks = sse_events(streamed)
    by_index = ["", ""]
    for chunk in chunks[:-1]:
        for choice in chunk["choices"]:
            by_index[choice["index"]] += choice["text"]
    assert by_index == [tok.decode(ids) + expected] * 2
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == len(ids)


def test_server_stop_strings_apply_only_when_a_request_gives_none(tok):
    model = tiny_model(tok.vocab_size)
    full = generate(model, tok, ["北京"], GenerationConfig(max_new_tokens=20))[0].text
    cut_at = full.strip()[2:4]  # some text the model really produces
    assert cut_at and full.index(cut_at) > 0
    app = make_app(model, tok, default_stop=(cut_at,))
    body = {"prompt": "北京", "max_tokens": 20, "temperature": 0}
    assert call(app, "POST", "/v1/completions", json=body).json()["choices"][0]["text"] == full[: full.index(cut_at)]
    own = call(app, "POST", "/v1/completions", json={**body, "stop": ["never in the text"]})
    assert own.json()["choices"][0]["text"] == full


def test_streamed_logprobs_add_up_to_the_non_streamed_ones(tok):
    app = make_app(tiny_model(tok.vocab_size), tok)
    body = {"prompt": "北京是", "max_tokens": 8, "echo": True, "logprobs": 2, "temperature": 0}
    plain = call(app, "POST", "/v1/completions", json=body).json()["choices"][0]
    chunks = sse_events(call(app, "POST", "/v1/completions", json={**body, "stream": True}))
    streamed: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": []}
    for chunk in chunks:
        for key in streamed:
            streamed[key] += chunk["choices"][0]["logprobs"][key]
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["text"]
    assert streamed == {key: plain["logprobs"][key] for key in streamed}
    assert plain["logprobs"]["token_logprobs"][0] is None
    assert len(plain["logprobs"]["tokens"]) == len(plain["logprobs"]["text_offset"]) >= 1 + len(tok.encode("北京是"))
    offsets = plain["logprobs"]["text_offset"]
    assert offsets == sorted(offsets) and offsets[-1] <= len(plain["text"])
    assert offsets[len(tok.encode("北京是")) + 1] == len("北京是")  # the first new token starts after the echo


def test_a_request_whose_sampling_fails_gets_500_and_the_one_beside_it_its_text(tok):
    """Fault injection: the engine hands one request a broken random generator, so its row raises inside the
    batched draw. That request gets a 500; the request decoded in the same batch gets the text it gets alone."""
    from tencentpretrain.generation.engine import Engine
    from tencentpretrain.serving.app import Server, create_app
    from tencentpretrain.serving.scheduler import Scheduler
    from tencentpretrain.tokenizers.templates import get_template
    from tests.serving.helpers import server_config

    class OneBrokenRow(Engine):
        def new_request(self, prompt_ids, config):
            request = super().new_request(prompt_ids, config)
            if config.sampling.seed == 666:
                request.generator = "broken"
            return request

    model = tiny_model(tok.vocab_size)
    config, _ = server_config()
    app = create_app(Server(Scheduler(OneBrokenRow(model, tok, max_batch_size=4, max_length=96)), tok,
                            get_template("user_bot"), config))
    body = {"prompt": "北京", "max_tokens": 30, "temperature": 1.0, "top_k": 40}
    alone = call(app, "POST", "/v1/completions", json={**body, "seed": 7}).json()["choices"][0]["text"]

    async def together():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            return await asyncio.gather(client.post("/v1/completions", json={**body, "seed": 666}),
                                        client.post("/v1/completions", json={**body, "seed": 7}))
    broken, fine = asyncio.run(together())
    assert broken.status_code == 500 and broken.json()["error"]["code"] == "generation_failed"
    assert fine.status_code == 200 and fine.json()["choices"][0]["text"] == alone
    assert app.state.server.scheduler.stats["active"] == 0
