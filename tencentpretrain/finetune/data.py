"""Reading task files and turning examples into padded batches.

Task files are the original's: a TSV whose first line names the columns (``label``, ``text_a``, ``text_b``...),
or a JSON file. Every problem is reported with the file and line it was found on. An example is a dict of
Python values (``src``: token ids, ``seg``: segment ids, ``label``...); ``pad_batch`` turns a list of them into
tensors padded to the longest sequence of the batch (not to --seq_length, as the original did: the encoder
masks padding, so the result is the same and the work smaller).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tencentpretrain.errors import DataError
from tencentpretrain.tokenizers import Tokenizer

Example = dict[str, Any]

CLS_TOKEN, SEP_TOKEN, PAD_TOKEN, MASK_TOKEN = "[CLS]", "[SEP]", "[PAD]", "[MASK]"


# ---------------------------------------------------------------------- files
@dataclass(frozen=True)
class TsvRow:
    """One data line of a task TSV: its fields by column name, and where it came from (for errors)."""

    path: str
    line: int  # 1-based, counting the header
    fields: dict[str, str]

    def where(self) -> str:
        return f"{self.path}, line {self.line}"

    def get(self, column: str) -> str:
        """The field ``column``; a DataError names the file and line when the line lacks it."""
        value = self.fields.get(column)
        if value is None:
            raise DataError(f"{self.where()}: no {column!r} field (the line has {len(self.fields)} of the header's "
                            "columns; fields are separated by tabs)")
        return value

    def error(self, message: str) -> DataError:
        return DataError(f"{self.where()}: {message}")


def read_tsv(path: str, required: Sequence[str]) -> list[TsvRow]:
    """The data lines of a TSV file whose first line is a header naming its columns.

    ``required`` columns must be in the header (a file without one would otherwise lose its first example
    silently, or be read with the wrong columns). Blank lines at the end are ignored; one between examples is an
    error (skipping it would put every later prediction on the wrong line of a prediction file).
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    if not lines:
        raise DataError(f"{path}: the file is empty; a task TSV starts with a header line such as 'label\\ttext_a'")
    columns = lines[0].split("\t")
    absent = [c for c in required if c not in columns]
    if absent:
        raise DataError(
            f"{path}, line 1: the header {columns!r} lacks the column(s) {absent}; the first line of a task TSV "
            f"names its tab-separated columns, e.g. {chr(9).join(required)!r}")
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise DataError(f"{path}, line {number}: blank line; a task TSV has one example per line (remove it)")
        values = line.split("\t")
        rows.append(TsvRow(path, number, dict(zip(columns, values))))
    return rows


def read_json(path: str) -> Any:
    """A JSON task file (CMRC, C3, ...), with a DataError naming the file when it is unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def parse_label(row: TsvRow, labels_num: int | None = None, column: str = "label") -> int:
    """The integer class id in ``column``, checked against ``labels_num`` when known."""
    text = row.get(column)
    try:
        label = int(text)
    except ValueError:
        raise row.error(f"the {column} {text!r} is not an integer class id") from None
    if label < 0 or (labels_num is not None and label >= labels_num):
        bound = f"0..{labels_num - 1} (labels_num = {labels_num})" if labels_num is not None else ">= 0"
        raise row.error(f"the {column} {label} is outside {bound}")
    return label


# ---------------------------------------------------------------------- encoding
@dataclass(frozen=True)
class SpecialIds:
    cls: int
    sep: int
    pad: int
    mask: int | None

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> SpecialIds:
        """The ids of [CLS], [SEP], [PAD] (and [MASK] when present) in ``tokenizer``'s vocabulary."""
        ids = {}
        for token in (CLS_TOKEN, SEP_TOKEN, PAD_TOKEN, MASK_TOKEN):
            token_id = tokenizer.piece_to_id(token)
            known = token_id is not None and tokenizer.id_to_piece(token_id) == token
            ids[token] = token_id if known else None
        absent = [t for t in (CLS_TOKEN, SEP_TOKEN, PAD_TOKEN) if ids[t] is None]
        if absent:
            raise DataError(f"the tokenizer's vocabulary has no {', '.join(absent)}: fine-tuning inputs are "
                            "[CLS] text [SEP]; use a BERT-style vocabulary (e.g. models/google_zh_vocab.txt)")
        return cls(ids[CLS_TOKEN], ids[SEP_TOKEN], ids[PAD_TOKEN], ids[MASK_TOKEN])


def encode_pair(tokenizer: Tokenizer, specials: SpecialIds, text_a: str, text_b: str | None,
                seq_length: int) -> tuple[list[int], list[int]]:
    """``[CLS] a [SEP]`` (segment 1) ``b [SEP]`` (segment 2), cut to ``seq_length`` tokens, as the original."""
    src = [specials.cls, *tokenizer.encode(text_a), specials.sep]
    seg = [1] * len(src)
    if text_b is not None:
        src_b = [*tokenizer.encode(text_b), specials.sep]
        src += src_b
        seg += [2] * len(src_b)
    return src[:seq_length], seg[:seq_length]


def require_examples(path: str, examples: list[Example]) -> list[Example]:
    """``examples`` read from ``path`` for prediction, logged as the original did; none at all is an error."""
    if not examples:
        raise DataError(f"{path}: no examples to predict")
    logging.getLogger("tencentpretrain.finetune").info("The number of prediction instances: %d", len(examples))
    return examples


# ---------------------------------------------------------------------- batches
def pad_batch(examples: Sequence[Example], pad_values: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Stack ``examples`` into tensors: list fields are padded to the batch's longest list with
    ``pad_values[key]`` (default 0), numbers become a (B,) tensor; ints -> long, floats -> float."""
    pad_values = pad_values or {}
    batch: dict[str, torch.Tensor] = {}
    for key, first in examples[0].items():
        values = [e[key] for e in examples]
        if isinstance(first, (list, tuple)):
            width = max(len(v) for v in values)
            pad = pad_values.get(key, 0)
            values = [list(v) + [pad] * (width - len(v)) for v in values]
            flat = values[0][0] if width else 0
        else:
            flat = first
        if isinstance(flat, bool) or not isinstance(flat, (int, float)):
            continue  # text kept beside the example (ids, raw strings) is not a tensor
        batch[key] = torch.tensor(values, dtype=torch.float32 if isinstance(flat, float) else torch.long)
    return batch


def batches(examples: Sequence[Example], batch_size: int, *, shuffle: random.Random | None = None
            ) -> Iterator[list[Example]]:
    """Consecutive batches of ``batch_size`` (the last may be smaller), after shuffling the order with
    ``shuffle`` when given."""
    order = list(examples)
    if shuffle is not None:
        shuffle.shuffle(order)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]
