"""/health of the in-process scheduler: 200 and "ok" while it takes requests, 503 once it drains or stops."""

from __future__ import annotations

import asyncio

import httpx

from tests.generation.scripted import tiny_model, tiny_tokenizer
from tests.serving.helpers import make_app


def test_health_is_503_once_the_scheduler_stops():
    tok = tiny_tokenizer()
    app = make_app(tiny_model(tok.vocab_size), tok)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            before = await client.get("/health")
            served = await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3})
            after_one = await client.get("/health")
            await asyncio.to_thread(app.state.server.scheduler.drain, 30)
            stopped = await client.get("/health")
            refused = await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3})
            return before, served, after_one, stopped, refused

    before, served, after_one, stopped, refused = asyncio.run(go())
    assert before.status_code == 200 and before.json()["status"] == "ok" and before.json()["engine"] == "alive"
    assert served.status_code == 200
    report = after_one.json()
    assert (report["active"], report["waiting"], report["in_flight"]) == (0, 0, 0)
    assert stopped.status_code == 503 and stopped.json() | {"status": "stopped", "engine": "down"} == stopped.json()
    assert refused.status_code == 503
