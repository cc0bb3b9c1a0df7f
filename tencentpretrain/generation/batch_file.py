"""File-to-file generation for ``inference/llama_infer.py`` and ``scripts/generate_lm.py``.

llama_infer: every line of the test file is a prompt and keeps its trailing newline (the question/answer
separator ChatFlow learned); each prompt plus its completion is written, followed by a blank line.
generate_lm: each line is stripped; the output is the line, a newline, then prompt plus completion; entries are
separated by a blank line (with one line, exactly the original's output).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from tencentpretrain.checkpoint import atomic_path
from tencentpretrain.errors import DataError
from tencentpretrain.generation.engine import GenerationConfig
from tencentpretrain.data.templates import Template
from tencentpretrain.generation.chat import chat_prompt_ids, template_stop_strings
from tencentpretrain.generation.generate import Completion, Prompt, generate
from tencentpretrain.models.model import Model
from tencentpretrain.tokenizers.base import Tokenizer

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
    marker stops generation.
    """
    inputs: Sequence[Prompt] = prompts
    if template is not None:
        inputs = [chat_prompt_ids(tokenizer, template, [{"role": "user", "content": p.strip()}]) for p in prompts]
        config = replace(config, stop_strings=config.stop_strings + template_stop_strings(template))
    completions = generate(model, tokenizer, inputs, config, batch_size=batch_size, max_length=seq_length)
    tokens = sum(len(c.token_ids) for c in completions)
    logger.info("generated %d tokens for %d prompts", tokens, len(prompts))
    return completions


def write_llama_infer(path: str, prompts: Sequence[str], completions: Sequence[Completion]) -> None:
    """Prompt + completion, then a blank line, for every prompt (written atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(prompt + completion.text + "\n\n" for prompt, completion in zip(prompts, completions))


def write_generate_lm(path: str, prompts: Sequence[str], completions: Sequence[Completion]) -> None:
    """The line, "\\n", then prompt + completion; entries separated by a blank line (written atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\n\n".join(p + "\n" + p + c.text for p, c in zip(prompts, completions)))
