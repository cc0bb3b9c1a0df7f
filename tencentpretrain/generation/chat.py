"""Conversations for the chat REPL and the server: prompt ids from messages, token-based history truncation.

Prompts come from the one template module (``tencentpretrain.tokenizers.templates``), so a model is prompted as it was
trained. When a conversation does not fit, whole oldest exchanges (a user turn and its answer) are dropped, never
part of a turn; the system message and the last user turn are always kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tencentpretrain.errors import ConfigError
from tencentpretrain.tokenizers.base import Tokenizer
from tencentpretrain.tokenizers.templates import Template, encode_chat

Message = Mapping[str, str]


def chat_prompt_ids(tokenizer: Tokenizer, template: Template, messages: Sequence[Message]) -> list[int]:
    """Token ids of ``messages`` (ending with a user turn) followed by the assistant cue."""
    return encode_chat(tokenizer, template, messages, add_generation_prompt=True).ids


def fit_history(
    tokenizer: Tokenizer, template: Template, messages: Sequence[Message], max_prompt_tokens: int
) -> tuple[list[int], list[Message]]:
    """Drop the oldest exchanges until the prompt has at most ``max_prompt_tokens`` tokens.

    Returns the prompt ids and the messages kept. Raises ConfigError when even the system message plus the last
    user turn do not fit.
    """
    system = [m for m in messages[:1] if m.get("role") == "system"]
    turns = list(messages[len(system) :])
    while True:
        ids = chat_prompt_ids(tokenizer, template, system + turns)
        if len(ids) <= max_prompt_tokens:
            return ids, system + turns
        if len(turns) <= 1:
            raise ConfigError(
                f"the message has {len(ids)} prompt tokens, more than the {max_prompt_tokens} allowed: "
                "shorten it or raise --seq_length"
            )
        turns = turns[2:]  # one user turn and its answer


def template_stop_strings(template: Template) -> tuple[str, ...]:
    """Text that starts a new user turn in ``template`` ("User:" for user_bot): the model must stop before it.

    Templates whose user turn has no marker of its own (``plain``) give none.
    """
    marker = template.user.split("{content}")[0].strip()
    return (marker,) if marker else ()


def check_prompt_fits(prompt_tokens: int, max_new_tokens: int, context: int) -> None:
    """Raise ConfigError (HTTP 400) when prompt plus max_new_tokens exceed the context."""
    if prompt_tokens + max_new_tokens > context:
        raise ConfigError(
            f"the prompt has {prompt_tokens} tokens and max_tokens is {max_new_tokens}: together "
            f"{prompt_tokens + max_new_tokens}, more than the context of {context} tokens"
        )
