"""Supervised fine-tuning processors: ``alpaca`` (alias ``llm_sft``) and ``chat``.

Both render a sample with a template from ``tencentpretrain.tokenizers.templates`` and score only the response tokens
and the end token after each response (``--train_on_prompt`` scores the prompt too). A sample longer than
``seq_length + 1`` tokens is cut: ``alpaca`` truncates the response, ``chat`` cuts after the last whole
assistant turn that fits (or truncates the first answer when not even one fits). A sample whose prompt alone
fills the sequence is skipped as ``prompt_too_long``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.processors.base import (
    MASK_CONTEXT,
    MASK_RESPONSE,
    MASK_SCORED,
    BadLine,
    Instance,
    Processor,
    SkipSample,
    parse_json_object,
    string_field,
)
from tencentpretrain.errors import DataError
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.tokenizers.base import Tokenizer
from tencentpretrain.tokenizers.templates import (
    EncodedSegments,
    encode_segments,
    get_template,
    render_chat,
    render_instruction,
)

# ShareGPT "from" values and the roles they mean.
SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "bot": "assistant", "chatgpt": "assistant",
}


class SftProcessor(Processor):
    """Shared by ``alpaca`` and ``chat``: template, masks and truncation."""

    default_template = "plain"

    def __init__(self, tokenizer: Tokenizer, config: DataConfig) -> None:
        super().__init__(tokenizer, config)
        self.require_special("eos_id", "end-of-sequence")
        self.template = get_template(config.prompt_template or self.default_template)
        self.prompt_value = MASK_SCORED if config.train_on_prompt else MASK_CONTEXT

    def options(self) -> dict[str, Any]:
        return {
            "seq_length": self.config.seq_length,
            "prompt_template": self.template.name,
            "train_on_prompt": self.config.train_on_prompt,
        }

    def to_instance(self, encoded: EncodedSegments, stats: Counter[str], *, cut_at_turns: bool) -> Instance:
        """Mask and cut an encoded sample to at most ``seq_length + 1`` tokens."""
        ids, targets = encoded.ids, encoded.targets
        first_target = targets.index(True) if True in targets else len(ids)
        if first_target >= self.max_tokens:
            raise SkipSample("prompt_too_long")
        cut = len(ids)
        if cut > self.max_tokens:
            fitting = [end for end in encoded.turn_ends if end <= self.max_tokens] if cut_at_turns else []
            cut = fitting[-1] if fitting else self.max_tokens
            stats["truncated"] += 1
        mask = [MASK_RESPONSE if t else self.prompt_value for t in targets[:cut]]
        mask[0] = MASK_CONTEXT  # the first token is never predicted
        return Instance(ids[:cut], mask)


@DATA_PROCESSORS.register("alpaca")
@DATA_PROCESSORS.register("llm_sft")
class AlpacaProcessor(SftProcessor):
    """JSON lines ``{"instruction", "input", "output"}`` (missing fields are empty; a literal ``\\n`` in the text
    becomes a newline, as ChatLLaMA's data expects). The default template ``plain`` reproduces ChatLLaMA:
    ``<s> instruction+input | output </s>``."""

    name = "alpaca"

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        if not line.strip():
            raise SkipSample("empty_line")
        obj = parse_json_object(line)
        fields = ("instruction", "input", "output")
        instruction, input, output = (string_field(obj, k).replace("\\n", "\n") for k in fields)
        if not (instruction or input or output):
            raise SkipSample("empty_sample")
        segments = render_instruction(self.template, instruction, input, output)
        return [self.to_instance(encode_segments(self.tokenizer, segments), stats, cut_at_turns=False)]


@DATA_PROCESSORS.register("chat")
class ChatProcessor(SftProcessor):
    """Multi-turn JSON lines: ``{"messages": [{"role", "content"}, ...]}`` (OpenAI) or
    ``{"conversations": [{"from", "value"}, ...]}`` (ShareGPT), with an optional system message (first message,
    or a top-level ``"system"`` string). Every assistant turn and its end token are scored."""

    name = "chat"
    default_template = "user_bot"

    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        if not line.strip():
            raise SkipSample("empty_line")
        messages = read_messages(parse_json_object(line))
        while messages and messages[-1]["role"] != "assistant":
            messages.pop()  # a trailing user turn has nothing to learn from
        if not any(m["role"] == "assistant" for m in messages):
            raise SkipSample("no_assistant_turn")
        try:
            segments = render_chat(self.template, messages)
        except DataError as e:
            raise BadLine("bad_conversation", str(e)) from None
        return [self.to_instance(encode_segments(self.tokenizer, segments), stats, cut_at_turns=True)]


def read_messages(obj: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation of an OpenAI- or ShareGPT-style record as ``[{"role", "content"}, ...]``."""
    if "messages" in obj:
        raw, role_key, content_key = obj["messages"], "role", "content"
    elif "conversations" in obj:
        raw, role_key, content_key = obj["conversations"], "from", "value"
    else:
        raise BadLine("missing_field", "expected a 'messages' (OpenAI) or 'conversations' (ShareGPT) list")
    if not isinstance(raw, list):
        raise BadLine("bad_conversation", f"'{'messages' if role_key == 'role' else 'conversations'}' must be a list")
    messages = [_read_message(i, m, role_key, content_key) for i, m in enumerate(raw)]
    system = obj.get("system")
    if isinstance(system, str) and system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _read_message(i: int, message: Any, role_key: str, content_key: str) -> dict[str, str]:
    if not isinstance(message, dict):
        raise BadLine("bad_conversation", f"message {i} must be an object, got {type(message).__name__}")
    role = message.get(role_key)
    role = SHAREGPT_ROLES.get(str(role).lower()) if role_key == "from" else role
    if role not in ("system", "user", "assistant"):
        raise BadLine("bad_conversation", f"message {i} has an unknown {role_key} {message.get(role_key)!r}")
    content = message.get(content_key)
    if not isinstance(content, str):
        raise BadLine("bad_field", f"message {i}: {content_key!r} must be a string, got {type(content).__name__}")
    return {"role": role, "content": content}
