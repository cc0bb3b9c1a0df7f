"""Chat prompts and token-based history truncation."""

from __future__ import annotations

import pytest

from tencentpretrain.errors import ConfigError
from tencentpretrain.generation.chat import chat_prompt_ids, fit_history, template_stop_strings
from tencentpretrain.tokenizers.templates import get_template
from tests.generation.scripted import tiny_tokenizer


def conversation(turns):
    messages = []
    for i in range(turns):
        messages += [{"role": "user", "content": f"问题{i}：北京有什么好玩的地方？"},
                     {"role": "assistant", "content": f"回答{i}：故宫和长城。"}]
    return messages + [{"role": "user", "content": "谢谢"}]


def test_default_template_is_user_bot_and_stops_at_user():
    tok, template = tiny_tokenizer(), get_template("user_bot")
    ids = chat_prompt_ids(tok, template, [{"role": "user", "content": "你好"}])
    assert tok.decode(ids) == "User: 你好\nBot:"
    assert template_stop_strings(template) == ("User:",)


def test_history_drops_whole_oldest_exchanges_to_fit():
    tok, template = tiny_tokenizer(), get_template("user_bot")
    messages = conversation(4)
    full = len(chat_prompt_ids(tok, template, messages))
    ids, kept = fit_history(tok, template, messages, full - 1)
    assert kept == messages[2:]  # exactly one exchange dropped
    assert len(ids) <= full - 1
    assert tok.decode(ids).startswith("User: 问题1")
    ids, kept = fit_history(tok, template, messages, full)
    assert kept == messages


def test_history_keeps_system_and_fails_when_the_last_turn_alone_is_too_long():
    tok, template = tiny_tokenizer(), get_template("user_bot")
    messages = [{"role": "system", "content": "你是助手"}] + conversation(3)
    last_only = len(chat_prompt_ids(tok, template, [messages[0], messages[-1]]))
    _, kept = fit_history(tok, template, messages, last_only)
    assert kept == [messages[0], messages[-1]]
    with pytest.raises(ConfigError, match="prompt tokens"):
        fit_history(tok, template, messages, last_only - 1)
