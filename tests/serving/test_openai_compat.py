"""The OpenAI API as real clients use it, with numbers checked against transformers on the same weights:
logprobs (echo + max_tokens 0 scoring, generated tokens), lm-evaluation-harness's ``local-completions`` against
its HF backend, and the official ``openai`` package (chat logprobs, n > 1, streamed usage)."""

from __future__ import annotations

import httpx
import pytest
import torch

from scripts import convert_llama_from_tencentpretrain_to_huggingface as tp_to_hf_script
from tencentpretrain.generation import GenerationConfig, SamplingParams, generate
from tests.convert.common import SPM_PATH, save_tiny
from tests.generation.scripted import tiny_tokenizer
from tests.serving.helpers import make_app, running

transformers = pytest.importorskip("transformers")

TEXTS = ["北京是中国的首都，", "今天天气很好", "LLaMA 模型在 2023 年发布"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(our model, tokenizer, HF export directory, transformers' LlamaForCausalLM on it). Weights with a large
    std, so that the distributions are far from uniform and logprobs differ from token to token."""
    directory = tmp_path_factory.mktemp("tiny")
    model, path, config_path = save_tiny(str(directory), std=0.25)
    hf_dir = str(directory / "hf")
    assert tp_to_hf_script.main(["--input_model_path", path, "--config_path", config_path, "--output_model_path",
                                 hf_dir, "--spm_model_path", SPM_PATH]) == 0
    hf = transformers.LlamaForCausalLM.from_pretrained(hf_dir).eval()
    return model, tiny_tokenizer(), hf_dir, hf


def hf_logprobs(hf, ids: list[int]) -> torch.Tensor:
    """(T - 1, V): row t is the log-distribution of token t + 1 given ids[: t + 1]."""
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)


def post(url: str, path: str, body: dict) -> dict:
    r = httpx.post(url + path, json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_echo_scoring_logprobs_equal_transformers(exported):
    model, tok, _, hf = exported
    prompts = [tok.encode(t) for t in TEXTS]  # token-id prompts, as lm-eval sends them (no bos added)
    with running(make_app(model, tok)) as url:
        body = post(url, "/v1/completions", {"model": "tiny", "prompt": prompts, "max_tokens": 0, "echo": True,
                                             "logprobs": 3, "temperature": 0})
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"] == {"prompt_tokens": sum(map(len, prompts)), "completion_tokens": 0,
                             "total_tokens": sum(map(len, prompts))}
    for ids, text, choice in zip(prompts, TEXTS, body["choices"]):
        assert choice["text"] == text and choice["finish_reason"] == "length"
        logprobs = choice["logprobs"]
        assert len(logprobs["tokens"]) == len(ids) and logprobs["token_logprobs"][0] is None
        assert logprobs["top_logprobs"][0] is None
        expected = hf_logprobs(hf, ids)
        chosen = expected.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
        assert logprobs["token_logprobs"][1:] == pytest.approx(chosen.tolist(), abs=2e-4)
        assert len(set(logprobs["token_logprobs"][1:])) > 2  # far from uniform: the comparison means something
        for top, row in zip(logprobs["top_logprobs"][1:], expected):
            assert sorted(top.values(), reverse=True) == pytest.approx(row.topk(len(top)).values.tolist(), abs=2e-4)
            assert 1 <= len(top) <= 3  # 3, unless two tokens read the same


def test_generated_token_logprobs_equal_transformers_and_temperature_zero_is_plain_greedy(exported):
    """The server's defaults are the CLI's (temperature 0.85, top_k 10, repetition penalty 1.15); a request with
    temperature 0 still gets plain greedy decoding, the tokens HF's argmax gives."""
    model, tok, _, hf = exported
    defaults = SamplingParams(temperature=0.85, top_k=10, repetition_penalty=1.15)
    prompt = [tok.bos_id, *tok.encode(TEXTS[0])]
    greedy = generate(model, tok, [prompt], GenerationConfig(max_new_tokens=12, stop_at_eos=False))[0].token_ids
    penalised = generate(model, tok, [prompt], GenerationConfig(
        max_new_tokens=12, stop_at_eos=False, sampling=SamplingParams(repetition_penalty=1.15)))[0].token_ids
    assert penalised != greedy  # so the server's default penalty would show
    with running(make_app(model, tok, defaults=defaults)) as url:
        body = post(url, "/v1/completions", {"prompt": [prompt], "max_tokens": 12, "temperature": 0, "logprobs": 2})
        explicit = post(url, "/v1/completions", {"prompt": [prompt], "max_tokens": 12, "temperature": 0,
                                                 "repetition_penalty": 1.15})
    assert explicit["choices"][0]["text"] == tok.decode(penalised)  # a penalty the request asks for applies
    choice = body["choices"][0]
    assert choice["text"] == tok.decode(greedy)
    expected = hf_logprobs(hf, prompt + greedy)[len(prompt) - 1 :]  # rows that predict the generated tokens
    if tok.eos_id in greedy:
        pytest.skip("the tiny model chose eos")
    assert expected.argmax(-1).tolist() == greedy  # HF's greedy tokens are the server's
    chosen = expected.gather(1, torch.tensor(greedy)[:, None]).squeeze(1)
    assert choice["logprobs"]["token_logprobs"] == pytest.approx(chosen.tolist(), abs=2e-4)
    assert [max(t.values()) for t in choice["logprobs"]["top_logprobs"]] == pytest.approx(chosen.tolist(), abs=2e-4)


@pytest.mark.slow
def test_lm_eval_local_completions_scores_like_its_hf_backend(exported):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    model, tok, hf_dir, _ = exported
    pairs = [("北京是", "中国的首都"), ("今天天气", "很好"), ("LLaMA 模型", "在 2023 年发布"), ("你好", "，世界")]
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
                for i, pair in enumerate(pairs)]
    # LLaMA was trained with bos first: both backends put it there (lm-eval's API backend sends token ids)
    reference = HFLM(pretrained=hf_dir, tokenizer=hf_dir, batch_size=1, device="cpu",
                     add_bos_token=True).loglikelihood(requests)
    with running(make_app(model, tok)) as url:
        api = LocalCompletionsAPI(base_url=url + "/v1/completions", model="tiny", tokenizer=hf_dir,
                                  tokenizer_backend="huggingface", max_length=96, batch_size=2, max_retries=1,
                                  add_bos_token=True)
        scored = api.loglikelihood(requests)
    assert lm_eval is not None and len(scored) == len(pairs)
    for (ours, our_greedy), (theirs, their_greedy) in zip(scored, reference):
        assert ours == pytest.approx(theirs, abs=5e-4)
        assert our_greedy == their_greedy
    assert len({round(s, 3) for s, _ in scored}) == len(pairs)


def test_openai_client_chat_logprobs_n_and_streamed_usage(exported):
    openai = pytest.importorskip("openai")
    model, tok, _, _ = exported
    with running(make_app(model, tok)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")
        assert client.models.retrieve("tiny").id == "tiny"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-4")
        messages = [{"role": "user", "content": [{"type": "text", "text": "你好"}]}]
        reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0,
                                               logprobs=True, top_logprobs=2)
        content = reply.choices[0].logprobs.content
        assert len(content) == reply.usage.completion_tokens and all(len(c.top_logprobs) == 2 for c in content)
        assert all(c.logprob == pytest.approx(c.top_logprobs[0].logprob, abs=1e-6) for c in content)  # greedy
        assert "".join(bytes(c.bytes).decode("utf-8", "replace") for c in content).strip() == \
            reply.choices[0].message.content.strip()

        several = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.0,
                                                 seed=11, n=3)
        texts = [c.message.content for c in several.choices]
        assert [c.index for c in several.choices] == [0, 1, 2] and len(set(texts)) > 1
        again = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.0,
                                               seed=11, n=3)
        assert [c.message.content for c in again.choices] == texts  # each seeded choice is reproducible

        chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=8,
                                                     temperature=1.0, seed=11, n=3, stream=True,
                                                     stream_options={"include_usage": True}))
        streamed = [""] * 3
        for chunk in chunks[:-1]:
            for choice in chunk.choices:
                streamed[choice.index] += choice.delta.content or ""
        assert streamed == texts
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == several.usage.completion_tokens
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="tiny", messages=messages, presence_penalty=0.5)
        assert error.value.code == "unsupported_parameter" and error.value.param == "presence_penalty"


@pytest.mark.slow
def test_logprobs_and_echo_cross_the_engine_process_unchanged():
    """The same scoring and generation requests through the engine process (what llama_server.py runs) and in
    process: the logprob fields travel between the processes intact."""
    from tests.serving.helpers import make_process_app, tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer()
    bodies = [
        ("/v1/completions", {"prompt": [tok.encode(t) for t in TEXTS], "max_tokens": 0, "echo": True, "logprobs": 2}),
        ("/v1/completions", {"prompt": "北京", "max_tokens": 6, "logprobs": 3, "temperature": 0, "echo": True}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 6,
                                  "temperature": 0.9, "seed": 4, "n": 2, "logprobs": True, "top_logprobs": 2}),
    ]

    def answers(app) -> list[list[dict]]:
        with running(app) as url:
            return [post(url, path, body)["choices"] for path, body in bodies]

    in_process = answers(make_app(model, tok))
    assert in_process[0][0]["logprobs"]["token_logprobs"][1] is not None
    through_process = answers(make_process_app(tiny_model_and_tokenizer, tok))
    assert_close(through_process, in_process)  # other torch threads: last-bit float differences


def assert_close(found, expected, where: str = "") -> None:
    """Equal JSON-like values, floats within 1e-5."""
    if isinstance(expected, float):
        assert found == pytest.approx(expected, abs=1e-5), where
    elif isinstance(expected, dict):
        assert isinstance(found, dict) and found.keys() == expected.keys(), where
        for key in expected:
            assert_close(found[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(found, list) and len(found) == len(expected), where
        for i, (f, e) in enumerate(zip(found, expected)):
            assert_close(f, e, f"{where}[{i}]")
    else:
        assert found == expected, where


def test_langchain_openai_chat_and_completions(exported):
    """LangChain's OpenAI classes (their own defaults and payloads) against the server: greedy chat equals the
    generator, streamed usage arrives, logprobs and n > 1 come back."""
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage

    from tencentpretrain.generation.chat import chat_prompt_ids
    from tencentpretrain.tokenizers.templates import get_template

    model, tok, _, _ = exported
    prompt = chat_prompt_ids(tok, get_template("user_bot"), [{"role": "user", "content": "你好"}])
    expected = generate(model, tok, [prompt], GenerationConfig(max_new_tokens=6, stop_strings=("User:",)))[0]
    with running(make_app(model, tok)) as url:
        chat = langchain_openai.ChatOpenAI(base_url=url + "/v1", api_key="none", model="tiny", max_tokens=6,
                                           temperature=0)
        reply = chat.invoke("你好")
        assert reply.content == expected.text
        assert reply.usage_metadata["input_tokens"] == len(prompt)
        chunks = list(chat.stream("你好", stream_usage=True))
        assert "".join(c.content for c in chunks) == expected.text
        assert [c.usage_metadata["output_tokens"] for c in chunks if c.usage_metadata] == \
            [reply.usage_metadata["output_tokens"]]
        scored = langchain_openai.ChatOpenAI(base_url=url + "/v1", api_key="none", model="tiny", max_tokens=3,
                                             temperature=0, logprobs=True, top_logprobs=2).invoke("你好")
        assert len(scored.response_metadata["logprobs"]["content"]) == 3
        several = langchain_openai.ChatOpenAI(base_url=url + "/v1", api_key="none", model="tiny", max_tokens=3,
                                              temperature=1.0, n=2).generate([[HumanMessage("你好")]])
        assert len(several.generations[0]) == 2
        completion = langchain_openai.OpenAI(base_url=url + "/v1", api_key="none", model="tiny", max_tokens=6,
                                             temperature=0)
        plain = generate(model, tok, ["北京"], GenerationConfig(max_new_tokens=6))[0].text
        assert completion.invoke("北京") == plain == "".join(completion.stream("北京"))
