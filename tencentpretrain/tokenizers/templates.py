"""Prompt and chat templates: the one place that says how instructions and conversations become model input.

Preprocessing (``alpaca`` and ``chat`` processors), the chat CLI, the HTTP server and the HF tokenizer-config
exporter all use this module, so a model is prompted at inference exactly as it was trained.

A rendered sample is a list of ``Segment``: text that is context (``target=False``) or that the model must
produce (``target=True``), plus the special tokens ``bos`` and ``eos``. Each assistant turn is followed by the
tokenizer's end-of-sequence token, which is a target too. ``encode_segments`` turns segments into token ids and
per-token target flags. Segments are encoded one by one, as the original ChatLLaMA/TencentPretrain SFT data was
(prompt and output tokenized separately), so a boundary never merges two pieces. With a SentencePiece model the
dummy prefix "▁" of a segment stands for one space: a non-first text segment that starts with a space loses that
space before encoding, so ``"Bot:" + " hi"`` encodes like the text ``"Bot: hi"`` does.

Public API::

    get_template(name) -> Template              # names: template_names()
    render_prompt(template, instruction, input="") -> str      # single-turn prompt text (no special tokens)
    render_instruction(template, instruction, input="", output=None) -> list[Segment]
    render_chat(template, messages, add_generation_prompt=False) -> list[Segment]
    segments_to_text(segments, bos="<s>", eos="</s>") -> str
    encode_segments(tokenizer, segments) -> EncodedSegments(ids, targets, turn_ends)
    template.chat_template                      # Jinja string for a HF tokenizer_config.json
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.tokenizers.base import Tokenizer

ROLES = ("system", "user", "assistant")


class Segment(NamedTuple):
    """A piece of a rendered sample: ``text``, or the special token ``special`` ("bos"/"eos") when set."""

    text: str
    target: bool  # the model is trained to produce it (assistant content and its end token)
    special: str | None = None


class EncodedSegments(NamedTuple):
    """Token ids of a rendered sample, with one flag per token saying whether it is a target."""

    ids: list[int]
    targets: list[bool]
    turn_ends: list[int]  # len(ids) right after each eos: where a conversation may be cut


@dataclass(frozen=True)
class Template:
    """How messages are laid out. Format strings use ``{content}`` (and ``{system}``)."""

    name: str
    description: str
    user: str  # a user turn, ending with the cue for the assistant ("\nBot:", "### Response:\n")
    assistant: str = "{content}"
    system: str = "{content}"  # a system message, rendered before the first user turn
    first_user_with_system: str | None = None  # the first user turn when the system goes inside it (llama2)
    separator: str = ""  # text before every user turn but the first (after the previous eos)
    bos_each_turn: bool = False  # a bos token before every user turn (llama2)
    default_system: str = ""  # used when a conversation has no system message
    instruction_with_input: str | None = None  # single-turn layout with a non-empty input ({instruction}, {input})
    system_with_input: str | None = None  # default system of that layout
    instruction_join: str = "\n"  # joins instruction and input when there is no dedicated layout
    chat_template: str = field(default="", compare=False)  # Jinja for HF tokenizer_config.json (filled below)


def _make_templates() -> dict[str, Template]:
    alpaca_system = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    )
    alpaca_system_input = (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request."
    )
    templates = [
        Template(
            name="plain",
            description="ChatLLaMA/TencentPretrain: instruction + input + output concatenated, no separator",
            user="{content}",
            assistant=" {content}",  # the space is the answer's own "▁" (see encode_segments): same ids, and
            instruction_join="",     # the rendered text tokenizes whole (llama.cpp, HF) to what was trained on
        ),
        Template(
            name="alpaca",
            description='Stanford Alpaca: "### Instruction:" / "### Input:" / "### Response:"',
            user="### Instruction:\n{content}\n\n### Response:\n",
            assistant=" {content}",  # as in plain
            system="{content}\n\n",
            separator="\n\n",
            default_system=alpaca_system,
            instruction_with_input="### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
            system_with_input=alpaca_system_input,
        ),
        Template(
            name="user_bot",
            description='llama_inference dialogue: "User: ...\\nBot: ..." turns separated by newlines',
            user="User: {content}\nBot:",
            assistant=" {content}",
            system="{content}\n",
            separator="\n",
        ),
        Template(
            name="llama2",
            description="Llama-2-chat: <s>[INST] <<SYS>>...<</SYS>> user [/INST] answer </s>",
            user="[INST] {content} [/INST]",
            assistant=" {content}",
            first_user_with_system="[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{content} [/INST]",
            bos_each_turn=True,
        ),
    ]
    return {t.name: _with_jinja(t) for t in templates}


def template_names() -> list[str]:
    """Names of the built-in templates."""
    return sorted(TEMPLATES)


def get_template(name: str) -> Template:
    """The template called ``name``; an unknown name is a ConfigError listing the close matches."""
    try:
        return TEMPLATES[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), TEMPLATES, n=2)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        choices = ", ".join(template_names())
        raise ConfigError(f"unknown prompt template {name!r}{hint}; choose from {choices}") from None


# ---------------------------------------------------------------------------------------------- rendering
def render_instruction(
    template: Template, instruction: str, input: str = "", output: str | None = None
) -> list[Segment]:
    """Segments of one instruction sample; ``output=None`` renders the prompt to generate from."""
    if input and template.instruction_with_input:
        system = template.system_with_input or template.default_system
        prompt = template.instruction_with_input.format(instruction=instruction, input=input)
        text = (template.system.format(content=system) if system else "") + prompt
        segments = [Segment("", False, "bos"), Segment(text, False)]
        if output is not None:
            segments += [Segment(template.assistant.format(content=output), True), Segment("", True, "eos")]
        return segments
    messages = [{"role": "user", "content": join_instruction_input(template, instruction, input)}]
    if output is not None:
        messages.append({"role": "assistant", "content": output})
    return render_chat(template, messages, add_generation_prompt=output is None)


def render_prompt(template: Template, instruction: str, input: str = "") -> str:
    """The text of a single-turn prompt (without special tokens) that a model continues."""
    return segments_to_text(render_instruction(template, instruction, input), bos="", eos="")


def join_instruction_input(template: Template, instruction: str, input: str) -> str:
    """Instruction and input as one user message (ChatLLaMA's ``plain`` joins them with nothing)."""
    if instruction and input and not instruction.endswith(template.instruction_join):
        return instruction + template.instruction_join + input
    return instruction + input


def render_chat(
    template: Template, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False
) -> list[Segment]:
    """Segments of a conversation: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.

    An optional system message comes first, then user and assistant alternate starting with the user. With
    ``add_generation_prompt`` the conversation must end with a user turn (its text already ends with the
    assistant cue); otherwise it may end with either.
    """
    system, turns = _split_system(template, messages)
    _check_turns(turns, add_generation_prompt)
    segments = [Segment("", False, "bos")]
    for i, message in enumerate(turns):
        content = message["content"]
        if message["role"] == "assistant":
            segments += [Segment(template.assistant.format(content=content), True), Segment("", True, "eos")]
            continue
        if i > 0 and template.bos_each_turn:
            segments.append(Segment("", False, "bos"))
        text = template.separator if i > 0 else ""
        if i == 0 and system and template.first_user_with_system:
            text += template.first_user_with_system.format(system=system, content=content)
        else:
            text += (template.system.format(content=system) if i == 0 and system else "")
            text += template.user.format(content=content)
        segments.append(Segment(text, False))
    return segments


def _split_system(template: Template, messages: Sequence[Mapping[str, str]]) -> tuple[str, list[Mapping[str, str]]]:
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ROLES:
            raise DataError(f"message {i}: expected {{'role': one of {ROLES}, 'content': str}}, got {message!r}")
        if not isinstance(message.get("content"), str):
            raise DataError(f"message {i}: 'content' must be a string, got {type(message.get('content')).__name__}")
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], list(messages[1:])
    return template.default_system, list(messages)


def _check_turns(turns: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> None:
    if not turns:
        raise DataError("a conversation needs at least one user message")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise DataError(
                f"turn {i} has role {message['role']!r}, expected {expected!r}: after an optional system "
                "message, user and assistant must alternate, starting with the user"
            )
    if add_generation_prompt and turns[-1]["role"] != "user":
        raise DataError("a generation prompt must end with a user message")


def segments_to_text(segments: Sequence[Segment], bos: str = "<s>", eos: str = "</s>") -> str:
    """The text of ``segments``, with ``bos``/``eos`` standing for the special tokens."""
    return "".join(bos if s.special == "bos" else eos if s.special == "eos" else s.text for s in segments)


# ---------------------------------------------------------------------------------------------- encoding
def encode_segments(tokenizer: Tokenizer, segments: Sequence[Segment]) -> EncodedSegments:
    """Token ids of ``segments`` and a target flag per token.

    Each text segment is encoded on its own. A missing bos token (``tokenizer.bos_id is None``) is left out; a
    missing eos token is an error, since every answer must end with one.
    """
    ids: list[int] = []
    targets: list[bool] = []
    turn_ends: list[int] = []
    first_text = True
    for segment in segments:
        if segment.special is not None:
            token = _special_id(tokenizer, segment.special)
            if token is not None:
                ids.append(token)
                targets.append(segment.target)
            if segment.special == "eos":
                turn_ends.append(len(ids))
            continue
        text = segment.text
        if not first_text and text.startswith(" ") and tokenizer.adds_dummy_prefix:
            text = text[1:]  # the dummy prefix "▁" stands for this space
        first_text = False
        if text:
            piece_ids = tokenizer.encode(text)
            ids.extend(piece_ids)
            targets.extend([segment.target] * len(piece_ids))
    return EncodedSegments(ids, targets, turn_ends)


def _special_id(tokenizer: Tokenizer, special: str) -> int | None:
    if special == "bos":
        return tokenizer.bos_id
    if tokenizer.eos_id is None:
        raise DataError(f"tokenizer {tokenizer.name!r} has no end-of-sequence token to end an answer with")
    return tokenizer.eos_id


def encode_chat(
    tokenizer: Tokenizer, template: Template, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False
) -> EncodedSegments:
    """``encode_segments(tokenizer, render_chat(...))``: what the chat CLI and server feed the model."""
    return encode_segments(tokenizer, render_chat(template, messages, add_generation_prompt))


# ---------------------------------------------------------------------------------------------- Jinja export
def _literal(text: str) -> str:
    """A Jinja string literal of ``text``."""
    return json.dumps(text, ensure_ascii=False)


def _wrap(fmt: str, inner: str) -> str:
    """Jinja output of ``fmt`` with ``{content}`` replaced by the expression ``inner``."""
    before, after = fmt.split("{content}")
    return "{{ " + " + ".join(part for part in (_literal(before), inner, _literal(after))) + " }}"


def _with_jinja(t: Template) -> Template:
    """Fill ``t.chat_template``: a Jinja template (HF ``apply_chat_template`` variables: messages, bos_token,
    eos_token, add_generation_prompt) that renders exactly ``segments_to_text(render_chat(...))``."""
    system_first = _wrap(t.system, "ns.system") + _wrap(t.user, "message['content']")
    if t.first_user_with_system:
        pre, rest = t.first_user_with_system.split("{system}")
        mid, post = rest.split("{content}")
        system_first = "{{ " + " + ".join(
            [_literal(pre), "ns.system", _literal(mid), "message['content']", _literal(post)]
        ) + " }}"
    parts = [
        "{%- set ns = namespace(system=" + _literal(t.default_system) + ", start=0) -%}",
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        "{%- set ns.system = messages[0]['content'] -%}{%- set ns.start = 1 -%}{%- endif -%}",
        "{{ bos_token }}",
        "{%- for message in messages[ns.start:] -%}",
        "{%- if message['role'] == 'user' -%}",
        "{%- if not loop.first -%}" + ("{{ bos_token }}" if t.bos_each_turn else "")
        + "{{ " + _literal(t.separator) + " }}{%- endif -%}",
        "{%- if loop.first and ns.system -%}" + system_first,
        "{%- else -%}" + _wrap(t.user, "message['content']") + "{%- endif -%}",
        "{%- elif message['role'] == 'assistant' -%}" + _wrap(t.assistant, "message['content']") + "{{ eos_token }}",
        "{%- endif -%}",
        "{%- endfor -%}",
    ]
    return Template(**{**t.__dict__, "chat_template": "".join(parts)})


TEMPLATES: dict[str, Template] = _make_templates()
