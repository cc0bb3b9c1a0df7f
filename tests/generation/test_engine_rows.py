"""The engine's rows stay independent when something goes wrong, and its logprobs are the model's."""

from __future__ import annotations

import math

import pytest
import torch

from tencentpretrain.errors import ConfigError
from tencentpretrain.generation.engine import Engine, GenerationConfig
from tencentpretrain.generation.sampling import SamplingParams, sample_next
from tencentpretrain.serving.scheduler import BatchLoop
from tests.generation.scripted import tiny_model, tiny_tokenizer

SAMPLED = GenerationConfig(max_new_tokens=10, sampling=SamplingParams(temperature=1.0, top_k=40, seed=5),
                           stop_at_eos=False)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return tiny_model(tok.vocab_size)


def run_loop(loop: BatchLoop) -> dict[int, list]:
    events: dict[int, list] = {}
    while loop.busy:
        for rid, event in loop.step():
            events.setdefault(rid, []).append(event)
    return events


def test_a_row_whose_sampling_fails_fails_alone(model, tok):
    prompt = [tok.bos_id, *tok.encode("北京是")]
    alone = Engine(model, tok, max_batch_size=2)
    expected = alone.new_request(prompt, SAMPLED)
    loop = BatchLoop(alone)
    loop.enqueue(1, expected)
    run_loop(loop)

    engine = Engine(model, tok, max_batch_size=2)
    good = engine.new_request(prompt, SAMPLED)
    bad = engine.new_request(prompt, SAMPLED)
    bad.generator = "not a generator"  # its row raises inside the batched draw
    loop = BatchLoop(engine)
    loop.enqueue(1, good)
    loop.enqueue(2, bad)
    events = run_loop(loop)
    assert [e.finish_reason for e in events[2] if e.finish_reason] == ["error"]
    assert events[1][-1].finish_reason == "length"
    assert good.output_ids == expected.output_ids and len(good.output_ids) == 10
    assert not engine.rows and engine.free_rows == 2  # the failed row's cache row was given back


def test_top_k_beyond_the_vocabulary_samples_like_no_top_k():
    logits = torch.randn(2, 50)
    huge = SamplingParams(temperature=1.0, top_k=10**18)
    off = SamplingParams(temperature=1.0, top_k=0)
    draws = [sample_next(logits, [p, p], [[], []], [torch.Generator().manual_seed(3) for _ in range(2)])
             for p in (huge, off)]
    assert torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("field,value", [
    ("repetition_penalty", math.nan), ("repetition_penalty", math.inf), ("temperature", math.inf),
    ("top_p", math.nan), ("repetition_penalty_slope", math.nan), ("seed", 2**64), ("seed", -1),
    ("top_k", 2.5), ("top_k", True),
])
def test_sampling_params_refuse_values_that_would_break_a_step(field, value):
    with pytest.raises(ConfigError, match=field):
        SamplingParams(**{field: value})


@pytest.mark.parametrize("chunk", [2, 256], ids=["chunked", "whole"])
def test_logprobs_are_the_log_softmax_of_the_full_forward(model, tok, chunk, monkeypatch):
    """Prompt logprobs (prefill, left-padded next to a longer prompt, scored a chunk of positions at a time) and
    generated-token logprobs (decode steps on the KV cache) against one plain forward pass over prompt + output."""
    import tencentpretrain.generation.engine as engine_module

    monkeypatch.setattr(engine_module, "SCORE_CHUNK", chunk)
    engine = Engine(model, tok, max_batch_size=2)
    short = [tok.bos_id, *tok.encode("今天")]
    long = [tok.bos_id, *tok.encode("北京是中国的首都，")]
    config = GenerationConfig(max_new_tokens=6, logprobs=3, prompt_logprobs=True, stop_at_eos=False)
    scored = engine.new_request(short, config)
    other = engine.new_request(long, GenerationConfig(max_new_tokens=6))
    engine.add([scored, other])
    while engine.rows:
        engine.step()
    ids = short + scored.output_ids
    with torch.no_grad():
        expected = model.logits(torch.tensor([ids]))[0].log_softmax(-1)  # (T, V)
    assert scored.prompt_logprobs[0] is None and len(scored.prompt_logprobs) == len(short)
    entries = scored.prompt_logprobs[1:] + scored.logprobs
    assert [e.token_id for e in entries] == ids[1:]
    for t, entry in enumerate(entries):
        row = expected[t]
        assert entry.logprob == pytest.approx(float(row[ids[t + 1]]), abs=1e-4)
        values, indices = row.topk(3)
        assert [i for i, _ in entry.top] == indices.tolist()
        assert [v for _, v in entry.top] == pytest.approx(values.tolist(), abs=1e-4)


def test_max_new_tokens_zero_only_scores_the_prompt(model, tok):
    engine = Engine(model, tok, max_batch_size=1)
    request = engine.new_request([tok.bos_id, *tok.encode("北京")],
                                 GenerationConfig(max_new_tokens=0, logprobs=0, prompt_logprobs=True))
    engine.add([request])
    assert request.finish_reason == "length" and request.output_ids == [] and not engine.rows
    assert len(request.prompt_logprobs) == 1 + len(tok.encode("北京"))


def test_prompt_ids_outside_the_vocabulary_are_refused(model, tok):
    engine = Engine(model, tok, max_batch_size=1)
    with pytest.raises(ConfigError, match="token ids"):
        engine.new_request([1, tok.vocab_size], GenerationConfig())


def test_logprobs_come_with_their_text_and_stop_with_a_stop_string(tok):
    """Tokens whose text is held back (a possible stop string) hold back their logprobs; the tokens of a stop
    string that cut the text never get logprobs."""
    from tests.generation.scripted import scripted_model

    prompt = [tok.bos_id, *tok.encode("你好")]
    answer = tok.encode("北京很好 User: 再见")
    model = scripted_model(tok.vocab_size, answer + [tok.eos_id], len(prompt))
    engine = Engine(model, tok, max_batch_size=1)
    loop = BatchLoop(engine)
    loop.enqueue(1, engine.new_request(prompt, GenerationConfig(max_new_tokens=30, stop_strings=("User:",),
                                                                logprobs=1)))
    events = run_loop(loop)[1]
    text = "".join(e.text for e in events)
    ids = [lp.token_id for e in events for lp in e.logprobs]
    assert text == "北京很好 "
    assert tok.decode(ids) == "北京很好 " and ids == answer[: len(ids)] and len(ids) < len(answer)
    for event in events:  # every event's logprobs belong to text released by then
        assert tok.decode([lp.token_id for lp in event.logprobs]).strip() in text
