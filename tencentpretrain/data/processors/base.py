"""What a data processor is: a registered class that turns one corpus line into training instances.

An ``Instance`` holds token ids and, for processors that mask the loss, one byte per token saying whether that
token is a target (see ``MASK_*``). The first token of an instance is never a target: the loader feeds
``tokens[:-1]`` and predicts ``tokens[1:]``. The builder cuts an instance longer than ``seq_length + 1`` into
consecutive chunks of ``seq_length + 1`` tokens (the last one shorter) and drops, counting it as ``empty_loss``,
any chunk without a scored token; SFT processors cut their samples themselves, at turn boundaries.

Processors of other model families (``bert``, ``mlm``, ``t5``, ``vit``) set ``cuts_instances = False`` and emit
finished instances (at most ``seq_length`` tokens, or an image), optionally with per-token ``flags`` (FLAG_* of
``tencentpretrain.data.dataset``) and a per-instance ``label``; their ``build_collator`` turns stored instances
into batches (masking happens there, seeded, so it can be dynamic). ``reads_documents = True`` makes the builder
hand over blank-line separated documents (one sentence per line) instead of single lines.

A processor signals a line it will not use with ``SkipSample(reason)`` (counted in the manifest) and a malformed
line with ``BadLine(reason, message)`` (an error naming path:line, or counted under ``--skip_bad_lines``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np

from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import MASK_CONTEXT, MASK_RESPONSE, MASK_SCORED  # noqa: F401 (processors' API)
from tencentpretrain.data.loader import LmCollator
from tencentpretrain.errors import ConfigError, TokenizerError
from tencentpretrain.models.capabilities import label_kind
from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.output import LABELS_NEXT_TOKENS
from tencentpretrain.tokenizers.base import Tokenizer


class Instance(NamedTuple):
    """One training sequence before padding."""

    tokens: Sequence[int] | np.ndarray  # (L,); an image's pixels (H * W * C,) uint8 for image processors
    mask: Sequence[int] | np.ndarray | None  # (L,) MASK_* values; None = every token after the first is scored
    flags: Sequence[int] | np.ndarray | None = None  # (L,) FLAG_* bits (processors with has_token_flags)
    label: int | None = None  # class label (processors with has_labels)


class SkipSample(Exception):
    """The line is well-formed but yields nothing (empty, prompt too long, no assistant turn)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadLine(Exception):
    """The line is malformed; ``message`` says what is wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message


class Processor(ABC):
    """Turns corpus lines into instances. Subclasses register with ``@DATA_PROCESSORS.register(name)``."""

    name: ClassVar[str] = ""  # canonical name, recorded in the manifest
    uses_mask: ClassVar[bool] = True  # whether instances carry a loss mask
    cuts_instances: ClassVar[bool] = True  # the builder cuts instances into seq_length + 1 chunks (LM data)
    has_token_flags: ClassVar[bool] = False  # instances carry per-token FLAG_* bits (token_flags.bin)
    has_labels: ClassVar[bool] = False  # instances carry a class label (labels.npy)
    needs_tokenizer: ClassVar[bool] = True  # False: built without a tokenizer (images); ``self.tokenizer`` is None
    reads_documents: ClassVar[bool] = False  # records are blank-line separated documents, not lines
    # The kinds of labels its batches carry (``tencentpretrain.targets.output.LABELS_*``); the model's targets
    # must score only these (checked by ``check_targets``).
    provides_labels: ClassVar[tuple[str, ...]] = (LABELS_NEXT_TOKENS,)

    def __init__(self, tokenizer: Tokenizer, config: DataConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.max_tokens = config.seq_length + 1

    @property
    def packs_stream(self) -> bool:
        """True when instances are documents to be packed back to back after all lines are read."""
        return False

    @property
    def stream_copies(self) -> int:
        """With ``packs_stream``: how many times the packed instances are stored (``mlm``'s ``--dup_factor``)."""
        return 1

    def options(self) -> dict[str, Any]:
        """The options that shaped the output, recorded in the manifest."""
        return {"seq_length": self.config.seq_length}

    @abstractmethod
    def process(self, line: str, stats: Counter[str]) -> list[Instance]:
        """Instances of one corpus line (without its newline); may count events such as "truncated" in ``stats``."""

    def payload_dtype(self) -> np.dtype | None:
        """dtype of ``tokens.bin`` when it is not token ids (images: uint8 pixels); None = the token dtype."""
        return None

    @classmethod
    def build_collator(cls, dataset: Any, *, seq_length: int, seed: int, model_config: Any = None) -> Any:
        """The loader's collator for a dataset this processor built (``tencentpretrain.data.loader.Collator``).

        ``dataset`` is the IndexedDataset, ``seq_length`` the batch width, ``seed`` the run's seed (masking draws
        from it) and ``model_config`` the ModelConfig the batches are for, when known (to check the targets).
        """
        check_targets(cls.name, cls.provides_labels, model_config)
        return LmCollator(dataset, seq_length)

    def require_special(self, attr: str, what: str) -> int:
        """The tokenizer's ``attr`` id ("bos_id", ...), or a TokenizerError naming the processor."""
        value = getattr(self.tokenizer, attr)
        if value is None:
            raise TokenizerError(
                f"data processor {self.name!r} needs a {what} token, and tokenizer {self.tokenizer.name!r} has none "
                "(a vocabulary file should contain <s>/</s> or [CLS]/[SEP])"
            )
        return value


def check_targets(processor: str, provided: Sequence[str], model_config: Any) -> dict[str, str]:
    """Which of the model's targets scores each kind of label the batches provide: {label kind: target name}.

    A ConfigError when the model has a target whose kind of labels (its declared ``labels``) the batches do not
    carry; the message names the registered targets that would fit. Targets that read no labels of their own
    (an auxiliary loss) fit any processor. Without ``model_config`` nothing is checked and nothing is routed.
    """
    if model_config is None:
        return {}
    missing = [t for t in model_config.target if label_kind(t) is not None and label_kind(t) not in provided]
    if missing:
        fitting = [t for t in TARGETS.names() if label_kind(t) in provided]
        raise ConfigError(
            f"data processor {processor!r} provides {' and '.join(provided)}, for the target(s) "
            f"{', '.join(fitting)}, but the model's \"target\" is {list(model_config.target)}: use a config whose "
            f"targets are among {fitting}, or a dataset built for {', '.join(missing)}"
        )
    return {label_kind(t): t for t in reversed(model_config.target) if label_kind(t) is not None}


def parse_json_object(line: str) -> dict[str, Any]:
    """``json.loads(line)``, which must be an object; a BadLine otherwise."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadLine("malformed_json", f"invalid JSON at column {e.colno}: {e.msg}") from None
    if not isinstance(value, dict):
        raise BadLine("malformed_json", f"expected a JSON object, got {type(value).__name__}")
    return value


def string_field(obj: dict[str, Any], key: str, *, required: bool = False) -> str:
    """``obj[key]`` as a string: missing or null is "" (or a BadLine when ``required``), a non-string a BadLine."""
    value = obj.get(key)
    if value is None:
        if required:
            raise BadLine("missing_field", f"missing field {key!r} (keys: {', '.join(map(repr, obj)) or 'none'})")
        return ""
    if not isinstance(value, str):
        raise BadLine("bad_field", f"field {key!r} must be a string, got {type(value).__name__}")
    return value
