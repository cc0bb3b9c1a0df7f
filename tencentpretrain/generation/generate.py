"""``generate`` and ``stream``: the one generation API every front end calls.

    completions = generate(model, tokenizer, ["北京是", "Hello"], GenerationConfig(max_new_tokens=32))
    for delta in stream(model, tokenizer, "北京是", GenerationConfig()):
        print(delta, end="", flush=True)

Prompts are text (a bos token is put in front, as the original did) or lists of ids (used as given).
Batches are filled continuously: when a row finishes, the next prompt takes its place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tencentpretrain.generation.engine import Engine, GenerationConfig, Request
from tencentpretrain.models.model import Model
from tencentpretrain.tokenizers.base import Tokenizer

Prompt = str | Sequence[int]


@dataclass(frozen=True)
class Completion:
    """The result of one prompt."""

    text: str  # the generated text only (not the prompt); cut before a stop string
    token_ids: list[int]  # generated ids (the stop token excluded)
    prompt_ids: list[int]
    finish_reason: str  # "stop" or "length"


def encode_prompt(tokenizer: Tokenizer | None, prompt: Prompt, *, add_bos: bool = True) -> list[int]:
    """Ids of a prompt: ``[bos] + encode(text)`` for text, the ids themselves for a list of ids."""
    if not isinstance(prompt, str):
        return [int(i) for i in prompt]
    if tokenizer is None:
        raise ValueError("a text prompt needs a tokenizer")
    bos = [tokenizer.bos_id] if add_bos and tokenizer.bos_id is not None else []
    return bos + tokenizer.encode(prompt)


def generate(
    model: Model,
    tokenizer: Tokenizer | None,
    prompts: Sequence[Prompt],
    config: GenerationConfig | Sequence[GenerationConfig] | None = None,
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    engine: Engine | None = None,
) -> list[Completion]:
    """Generate a completion for every prompt, ``batch_size`` rows at a time (continuous batching).

    ``config`` is one GenerationConfig for all prompts or one per prompt. ``max_length`` is the context (prompt
    plus output) per row; default the model config's ``max_seq_length``. Pass an ``engine`` to reuse its cache.
    """
    config = config if config is not None else GenerationConfig()
    configs = list(config) if isinstance(config, Sequence) else [config] * len(prompts)
    engine = engine or Engine(model, tokenizer, max_batch_size=batch_size, max_length=max_length)
    requests = [engine.new_request(encode_prompt(tokenizer, p), c) for p, c in zip(prompts, configs)]
    waiting = list(requests)
    while waiting or engine.rows:
        take = min(engine.free_rows, len(waiting))
        if take:
            engine.add(waiting[:take])
            waiting = waiting[take:]
        engine.step()
    return [_completion(r) for r in requests]


def stream(
    model: Model,
    tokenizer: Tokenizer,
    prompt: Prompt,
    config: GenerationConfig | None = None,
    *,
    max_length: int | None = None,
    engine: Engine | None = None,
) -> Iterator[str]:
    """Yield the text of one completion piece by piece; the pieces add up to ``generate``'s text.

    Never yields half a UTF-8 character, nor text that might turn out to be the start of a stop string.
    """
    config = config if config is not None else GenerationConfig()
    engine = engine or Engine(model, tokenizer, max_batch_size=1, max_length=max_length)
    yield from stream_request(engine, engine.new_request(encode_prompt(tokenizer, prompt), config))


def stream_request(engine: Engine, request: Request) -> Iterator[str]:
    """Like ``stream`` for a request already made with ``engine.new_request`` (the REPL uses it)."""
    engine.add([request])
    while True:
        text = request.take_text()
        if text:
            yield text
        if request.finished:
            return
        engine.step()


def _completion(request: Request) -> Completion:
    return Completion(request.text, list(request.output_ids), list(request.prompt_ids), request.finish_reason or "")
