from __future__ import annotations

import pytest

from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.tokenizers.templates import (
    encode_chat,
    encode_segments,
    get_template,
    render_chat,
    render_instruction,
    render_prompt,
    segments_to_text,
    template_names,
)

CONVERSATIONS = [
    [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！有什么可以帮你？"}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "1+1={?}"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And 2+2?"},
    ],
    [{"role": "system", "content": ""}, {"role": "user", "content": "hi"}],
]


def test_names_and_unknown():
    assert {"plain", "alpaca", "user_bot", "llama2"} <= set(template_names())
    with pytest.raises(ConfigError, match="did you mean 'alpaca'"):
        get_template("alpacca")


@pytest.mark.parametrize("name", ["plain", "alpaca", "user_bot", "llama2"])
@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_jinja_chat_template_renders_the_same_text(name, messages):
    jinja2 = pytest.importorskip("jinja2")
    template = get_template(name)
    expected = segments_to_text(render_chat(template, messages))
    rendered = jinja2.Environment().from_string(template.chat_template).render(
        messages=messages, bos_token="<s>", eos_token="</s>", add_generation_prompt=True
    )
    assert rendered == expected


def test_prompt_texts():
    assert render_prompt(get_template("plain"), "翻译：", "你好") == "翻译：你好"
    assert render_prompt(get_template("user_bot"), "北京有什么好玩的地方？") == "User: 北京有什么好玩的地方？\nBot:"
    assert render_prompt(get_template("llama2"), "hi") == "[INST] hi [/INST]"
    alpaca = render_prompt(get_template("alpaca"), "Translate.", "你好")
    assert alpaca.endswith("### Instruction:\nTranslate.\n\n### Input:\n你好\n\n### Response:\n")
    assert alpaca.startswith("Below is an instruction that describes a task, paired with an input")
    assert render_prompt(get_template("alpaca"), "Say hi.").endswith("### Instruction:\nSay hi.\n\n### Response:\n")


def test_chat_texts():
    messages = CONVERSATIONS[1][:3]
    assert segments_to_text(render_chat(get_template("user_bot"), messages)) == (
        "<s>Answer briefly.\nUser: 1+1={?}\nBot: 2</s>"
    )
    assert segments_to_text(render_chat(get_template("llama2"), CONVERSATIONS[1])) == (
        "<s>[INST] <<SYS>>\nAnswer briefly.\n<</SYS>>\n\n1+1={?} [/INST] 2</s><s>[INST] And 2+2? [/INST]"
    )


def test_segment_targets_are_assistant_content_and_eos():
    segments = render_instruction(get_template("plain"), "问：", "天空是什么颜色？", "蓝色。")
    assert [(s.text, s.target, s.special) for s in segments] == [
        ("", False, "bos"), ("问：天空是什么颜色？", False, None), (" 蓝色。", True, None), ("", True, "eos"),
    ]


def test_encode_segments_matches_separate_encoding(tok):
    # plain reproduces ChatLLaMA: <s> + enc(instruction + input) + enc(output) + </s>
    encoded = encode_segments(tok, render_instruction(get_template("plain"), "问：", "天空？", "蓝色。"))
    prompt, answer = tok.encode("问：天空？"), tok.encode("蓝色。")
    assert encoded.ids == [tok.bos_id, *prompt, *answer, tok.eos_id]
    assert encoded.targets == [False] * (1 + len(prompt)) + [True] * (len(answer) + 1)
    assert encoded.turn_ends == [len(encoded.ids)]


def test_space_before_an_answer_is_the_dummy_prefix(tok):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    encoded = encode_chat(tok, get_template("user_bot"), messages)
    assert encoded.ids == [tok.bos_id, *tok.encode("User: hi\nBot:"), *tok.encode("hello"), tok.eos_id]
    assert tok.decode(encoded.ids) == "User: hi\nBot: hello"


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "at least one user"),
        ([{"role": "assistant", "content": "x"}], "expected 'user'"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "expected 'assistant'"),
        ([{"role": "user", "content": 3}], "must be a string"),
        ([{"role": "robot", "content": "x"}], "role"),
    ],
)
def test_bad_conversations(messages, match):
    with pytest.raises(DataError, match=match):
        render_chat(get_template("user_bot"), messages)


def test_generation_prompt_must_end_with_user():
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(DataError, match="must end with a user"):
        render_chat(get_template("user_bot"), messages, add_generation_prompt=True)
