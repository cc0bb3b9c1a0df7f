"""Incremental detokenization that never emits half a UTF-8 character, and stop-string handling.

SentencePiece writes characters outside its vocabulary as byte pieces (``<0xE5><0x8C><0x97>`` for "北"). Decoding
after each token would show "�" until the last byte arrives. ``IncrementalDetokenizer`` decodes a short window of
recent ids and holds text back while it ends in an incomplete character, so the concatenation of its deltas is
exactly ``tokenizer.decode(all ids)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.tokenizers.base import Tokenizer

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Feed ids one by one with ``push``; each call returns the new, complete text (maybe "")."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""  # everything emitted so far
        self._prefix = 0  # ids[_prefix:_read] is decoded context, whose text was already emitted
        self._read = 0

    def push(self, token_id: int) -> str:
        """Add one id; return the text it completes."""
        self.ids.append(int(token_id))
        context = self.tokenizer.decode(self.ids[self._prefix : self._read])
        window = self.tokenizer.decode(self.ids[self._prefix :])
        if window.endswith(REPLACEMENT) or not window.startswith(context):
            return ""  # an unfinished multi-byte character: wait for its next byte
        delta = window[len(context) :]
        if delta:
            # Decoding starts at a piece boundary one step back, so a leading "▁" keeps its space.
            self._prefix, self._read = self._read, len(self.ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """Text still held back (an incomplete character at the very end decodes as "�")."""
        full = self.tokenizer.decode(self.ids)
        delta = full[len(self.text) :] if full.startswith(self.text) else ""
        self.text += delta
        return delta


def decode_all(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """``tokenizer.decode``: the text that the deltas of an IncrementalDetokenizer add up to."""
    return tokenizer.decode(list(ids))


class StopStringFilter:
    """Holds back text that might be the start of a stop string; cuts the text at the first stop string."""

    def __init__(self, stop_strings: Sequence[str]) -> None:
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.pending = ""  # produced text not yet released
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Add produced text; return the part that is safe to release."""
        if self.stopped:
            return ""
        self.pending += delta
        cut = min((i for i in (self.pending.find(s) for s in self.stop_strings) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        keep = self._partial_suffix()
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(out) :]
        return out

    def finish(self) -> str:
        """Release what was held back when generation ends without a stop string."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out

    def _partial_suffix(self) -> int:
        """Length of the longest suffix of ``pending`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stop_strings:
            for n in range(min(len(stop) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(stop[:n]):
                    best = n
                    break
        return best
