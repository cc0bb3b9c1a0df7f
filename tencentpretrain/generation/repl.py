"""The multi-turn chat REPL of ``inference/llama_dialogue.py``.

Type a message to get a streamed answer; ``clear`` starts a new conversation, ``exit`` quits. The prompt is the
chat template's (``User: ...\\nBot:`` by default, as the original dialogue), and the history is cut by tokens:
whole oldest exchanges are dropped so the prompt stays within ``keep_length_ratio * seq_length`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TextIO

from tencentpretrain.errors import TencentPretrainError
from tencentpretrain.generation.chat import fit_history, template_stop_strings
from tencentpretrain.generation.engine import Engine, GenerationConfig
from tencentpretrain.generation.generate import stream_request
from tencentpretrain.tokenizers.base import Tokenizer
from tencentpretrain.tokenizers.templates import Template

NEW_CHAT = "开启新的一轮聊天/Start a new round of chat:"


@dataclass(frozen=True, kw_only=True)
class DialogueConfig:
    seq_length: int = 2048  # prompt + answer tokens
    keep_length_ratio: float = 0.5  # share of seq_length the history may take
    bot_name: str = "ChatLLaMa"


class Dialogue:
    """A conversation: ``reply(text)`` yields the answer's text pieces and remembers the exchange."""

    def __init__(self, engine: Engine, tokenizer: Tokenizer, template: Template, generation: GenerationConfig,
                 config: DialogueConfig) -> None:
        self.engine, self.tokenizer, self.template, self.config = engine, tokenizer, template, config
        self.generation = replace(generation, stop_strings=generation.stop_strings + template_stop_strings(template))
        self.messages: list[dict[str, str]] = []

    def clear(self) -> None:
        self.messages = []

    def reply(self, text: str):
        budget = int(self.config.keep_length_ratio * self.config.seq_length)
        ids, kept = fit_history(self.tokenizer, self.template, [*self.messages, {"role": "user", "content": text}],
                                budget)
        room = self.config.seq_length - len(ids)
        generation = replace(self.generation, max_new_tokens=max(1, min(self.generation.max_new_tokens, room)))
        request = self.engine.new_request(ids, generation)
        answer = []
        for piece in stream_request(self.engine, request):
            answer.append(piece)
            yield piece
        self.messages = [*kept, {"role": "assistant", "content": "".join(answer).strip()}]


def run_repl(dialogue: Dialogue, read: Callable[[str], str] = input, out: TextIO | None = None) -> None:
    """Read messages until ``exit`` (or end of input); ``clear`` resets the history."""
    import sys

    out = out or sys.stdout
    out.write(NEW_CHAT + "\n")
    while True:
        try:
            text = read("User: ").strip()
        except EOFError:
            return
        if text == "exit":
            return
        if text == "clear":
            dialogue.clear()
            out.write(NEW_CHAT + "\n")
            continue
        if not text:
            continue
        out.write(f"{dialogue.config.bot_name}: ")
        try:
            for piece in dialogue.reply(text):
                out.write(piece)
                out.flush()
        except TencentPretrainError as e:
            out.write(f"[error] {e}")
        out.write("\n")
