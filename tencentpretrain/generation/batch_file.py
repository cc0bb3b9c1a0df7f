"""File-to-file generation for ``inference/llama_infer.py`` and ``scripts/generate_lm.py``.

llama_infer: every line of the test file is a prompt and keeps its trailing newline (the question/answer
separator ChatFlow learned); each prompt plus its completion is written, followed by a blank line.
generate_lm: each line is stripped; the output is the line, a newline, then prompt plus completion; entries are
separated by a blank line (with one line, exactly the original's output).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from tencentpretrain.atomic import atomic_path
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.generation.chat import chat_prompt_ids, template_stop_strings
from tencentpretrain.generation.engine import GenerationConfig
from tencentpretrain.generation.generate import Completion, encode_prompt, generate
from tencentpretrain.models.model import Model
from tencentpretrain.tokenizers.base import Tokenizer
from tencentpretrain.tokenizers.templates import Template

logger = logging.getLogger(__name__)


def read_prompts(path: str, *, keep_newline: bool) -> list[str]:
    """Non-empty lines of ``path``; with ``keep_newline`` each keeps its "\\n" (the last line gets one)."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    if not lines:
        raise DataError(f"{path}: no prompt (the file has no non-empty line)")
    if keep_newline:
        return [line if line.endswith("\n") else line + "\n" for line in lines]
    return [line.strip() for line in lines]


def generate_file(
    model: Model,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    config: GenerationConfig,
    *,
    batch_size: int,
    seq_length: int,
    template: Template | None = None,
) -> list[Completion]:
    """Completions of ``prompts``, ``batch_size`` at a time, each row at most ``seq_length`` tokens in all.

    Without a template a prompt is used as it is (``<s>`` + its text, as llama_inference did); with one, each
    prompt is a user message rendered exactly as instruction tuning rendered it, and the template's next user
    marker stops generation. As in the original, prompt + completion never exceed ``seq_length`` tokens: a prompt
    of exactly ``seq_length`` tokens gets an empty completion, a longer one is a ConfigError.
    """
    if template is not None:
        ids = [chat_prompt_ids(tokenizer, template, [{"role": "user", "content": p.strip()}]) for p in prompts]
        config = replace(config, stop_strings=config.stop_strings + template_stop_strings(template))
    else:
        ids = [encode_prompt(tokenizer, p) for p in prompts]
    for number, prompt_ids in enumerate(ids, 1):
        if len(prompt_ids) > seq_length:
            raise ConfigError(f"prompt {number} ({prompts[number - 1][:30]!r}...) has {len(prompt_ids)} tokens, more "
                              f"than --seq_length {seq_length}: shorten it or raise --seq_length")
    run = [i for i, prompt_ids in enumerate(ids) if len(prompt_ids) != seq_length]  # the others are full already
    # The engine's seq_length is its KV slots, which let a row reach seq_length + 1 tokens (the last sampled token
    # needs no slot): the total-length rule is each row's token budget instead.
    configs = [replace(config, max_new_tokens=min(config.max_new_tokens, seq_length - len(ids[i])))
               for i in run]
    generated = generate(model, tokenizer, [ids[i] for i in run], configs, batch_size=batch_size,
                         max_length=seq_length)
    completions: list[Completion] = [Completion("", [], list(prompt_ids), "length") for prompt_ids in ids]
    for i, completion in zip(run, generated):
        completions[i] = completion if template is not None else in_context(tokenizer, completion)
    tokens = sum(len(c.token_ids) for c in completions)
    logger.info("generated %d tokens for %d prompts", tokens, len(prompts))
    return completions


def in_context(tokenizer: Tokenizer, completion: Completion) -> Completion:
    """``completion`` with the text it has after its prompt, as the original's decode of the whole row gave it.

    SentencePiece drops the space of a text's first piece ("▁好" alone decodes to "好"); after the prompt that
    space is real ("北京是 好"). A chat answer keeps the text without it (the space belongs to the template).
    """
    before = tokenizer.decode(completion.prompt_ids)
    whole = tokenizer.decode(completion.prompt_ids + completion.token_ids)
    after = whole[len(before):] if whole.startswith(before) else ""
    if after.startswith(" ") and not completion.text.startswith(" ") and after[1:].startswith(completion.text):
        return replace(completion, text=" " + completion.text)
    return completion


def write_llama_infer(path: str, prompts: Sequence[str], completions: Sequence[Completion]) -> None:
    """Prompt + completion, then a blank line, for every prompt (written atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(prompt + completion.text + "\n\n" for prompt, completion in zip(prompts, completions))


def write_generate_lm(path: str, prompts: Sequence[str], completions: Sequence[Completion]) -> None:
    """The line, "\\n", then prompt + completion; entries separated by a blank line (written atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\n\n".join(p + "\n" + p + c.text for p, c in zip(prompts, completions)))


def run_batch_file(
    argv: list[str] | None,
    *,
    description: str,
    keep_newline: bool,
    write: Callable[[str, Sequence[str], Sequence[Completion]], None],
    defaults: dict[str, object] | None = None,
) -> None:
    """The ``main`` of a file-to-file entry point: flags, model, prompts of --test_path, output file.

    ``keep_newline`` and ``write`` are what distinguish llama_infer (lines kept with their newline) from
    generate_lm (stripped lines); ``defaults`` overrides flag defaults (generate_lm's sampling).
    """
    import argparse

    from tencentpretrain.generation.options import (
        add_inference_args,
        generation_from_args,
        load_tokenizer_and_model,
        parse_inference_args,
    )
    from tencentpretrain.tokenizers.templates import get_template

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test_path", required=True, help="prompts, one per line")
    parser.add_argument("--prediction_path", required=True, help="output file")
    add_inference_args(parser, seq_length=128, batch_size=1)
    parser.set_defaults(prompt_template=None, **(defaults or {}))  # raw lines unless a template is named
    args = parse_inference_args(parser, argv)
    model, tokenizer = load_tokenizer_and_model(args)
    prompts = read_prompts(args.test_path, keep_newline=keep_newline)
    template = get_template(args.prompt_template) if args.prompt_template else None
    completions = generate_file(model, tokenizer, prompts, generation_from_args(args),
                                batch_size=args.batch_size, seq_length=args.seq_length, template=template)
    write(args.prediction_path, prompts, completions)
