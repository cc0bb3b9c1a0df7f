"""KV-cache generation: cache == recomputation, batching == alone, streaming == decode(all ids), stops."""

from __future__ import annotations

import pytest
import torch

from tencentpretrain.errors import ConfigError
from tencentpretrain.generation import Engine, GenerationConfig, SamplingParams, generate, stream
from tencentpretrain.generation.detokenizer import IncrementalDetokenizer, StopStringFilter
from tests.generation.scripted import CHINESE_WITH_BYTES, scripted_model, tiny_model, tiny_tokenizer

PROMPTS = [[1, 5, 6, 7, 8, 9, 10, 11], [1, 30], [1, 40, 41, 42, 43], [1, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59], [1, 7]]


def greedy_by_recomputation(model, prompt, steps):
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(model.logits(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


@torch.no_grad()
def test_greedy_with_cache_equals_full_recomputation_across_joins_and_compaction():
    model = tiny_model(120)
    config = GenerationConfig(max_new_tokens=12, stop_at_eos=False)
    # 2 rows for 5 prompts: rows are freed and refilled, and a 24-slot cache forces compaction and shifts.
    out = generate(model, None, PROMPTS, config, batch_size=2, max_length=24)
    for prompt, completion in zip(PROMPTS, out):
        assert completion.token_ids == greedy_by_recomputation(model, prompt, 12)
        assert completion.finish_reason == "length"


def test_mixed_length_batch_equals_each_prompt_alone_when_sampling_with_seeds():
    model = tiny_model(120)
    configs = [GenerationConfig(max_new_tokens=10, stop_at_eos=False,
                                sampling=SamplingParams(temperature=1.0, top_k=20, top_p=0.9, seed=i,
                                                        repetition_penalty=1.2)) for i in range(len(PROMPTS))]
    batched = generate(model, None, PROMPTS, configs, batch_size=len(PROMPTS))
    alone = [generate(model, None, [p], [c], batch_size=1)[0] for p, c in zip(PROMPTS, configs)]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    assert len({tuple(c.token_ids) for c in batched}) > 1


def test_same_seed_same_tokens_and_different_seed_differs():
    model = tiny_model(120)
    sample = lambda seed: generate(model, None, [PROMPTS[0]], GenerationConfig(
        max_new_tokens=16, stop_at_eos=False, sampling=SamplingParams(temperature=1.5, seed=seed)))[0].token_ids
    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_streamed_deltas_equal_text_equal_decode_of_all_ids_with_byte_fallback():
    tok = tiny_tokenizer()
    script = tok.encode(CHINESE_WITH_BYTES)
    assert any(tok.is_byte(i) for i in script), "the script must use byte-fallback pieces"
    prompt = [tok.bos_id] + tok.encode("北京")
    model = scripted_model(tok.vocab_size, script, len(prompt))
    config = GenerationConfig(max_new_tokens=len(script))
    deltas = list(stream(model, tok, prompt, config))
    completion = generate(model, tok, [prompt], config)[0]
    assert completion.token_ids == script
    assert "".join(deltas) == completion.text == tok.decode(script) == CHINESE_WITH_BYTES
    assert all("\ufffd" not in d for d in deltas)
    assert len(deltas) > 3


def test_incremental_detokenizer_never_emits_half_a_character():
    tok = tiny_tokenizer()
    ids = tok.encode("𝄞鬱龘 hello 北京")
    detok = IncrementalDetokenizer(tok)
    deltas = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(deltas) == tok.decode(ids)
    first_byte = next(i for i, t in enumerate(ids) if tok.is_byte(t))
    assert deltas[first_byte : first_byte + 3] == ["", "", ""]  # 𝄞 is 4 byte pieces: nothing until the 4th
    assert deltas[first_byte + 3] == "𝄞"


def test_eos_stops_a_row_and_is_not_in_the_output():
    tok = tiny_tokenizer()
    script = tok.encode("好的") + [tok.eos_id] + tok.encode("不该出现")
    prompt = [tok.bos_id] + tok.encode("你好")
    model = scripted_model(tok.vocab_size, script, len(prompt))
    out = generate(model, tok, [prompt], GenerationConfig(max_new_tokens=30))[0]
    assert out.text == "好的" and out.finish_reason == "stop"
    assert out.token_ids == tok.encode("好的")


def test_stop_strings_cut_text_and_are_never_streamed():
    tok = tiny_tokenizer()
    script = tok.encode("北京很好\nUser: 再见")
    prompt = [tok.bos_id] + tok.encode("你好")
    model = scripted_model(tok.vocab_size, script, len(prompt))
    config = GenerationConfig(max_new_tokens=40, stop_strings=("User:",))
    deltas = list(stream(model, tok, prompt, config))
    assert "".join(deltas) == "北京很好\n"
    assert generate(model, tok, [prompt], config)[0].finish_reason == "stop"


def test_stop_ids_and_max_new_tokens():
    model = tiny_model(120)
    free = generate(model, None, [PROMPTS[0]], GenerationConfig(max_new_tokens=8, stop_at_eos=False))[0]
    stop_at = free.token_ids[3]
    first = free.token_ids.index(stop_at)
    out = generate(model, None, [PROMPTS[0]], GenerationConfig(max_new_tokens=8, stop_ids=(stop_at,)))[0]
    assert out.token_ids == free.token_ids[:first] and out.finish_reason == "stop"
    assert len(free.token_ids) == 8 and free.finish_reason == "length"


def test_context_limit_stops_a_row_and_long_prompts_are_rejected():
    model = tiny_model(120)
    out = generate(model, None, [PROMPTS[0]], GenerationConfig(max_new_tokens=50, stop_at_eos=False),
                   max_length=12)[0]
    assert len(PROMPTS[0]) + len(out.token_ids) == 13 and out.finish_reason == "length"  # last token never fed
    engine = Engine(model, None, max_batch_size=1, max_length=4)
    with pytest.raises(ConfigError, match="context of 4"):
        engine.new_request(PROMPTS[0], GenerationConfig())


def test_stop_string_filter_holds_back_partial_matches():
    f = StopStringFilter(["User:"])
    assert f.feed("hello Us") == "hello "
    assert f.feed("e") == ""
    assert f.feed("d it") == "Used it"
    assert f.feed(" Use") == " "
    assert f.feed("r: x") == "" and f.stopped
