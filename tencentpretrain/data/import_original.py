"""Importing a ``dataset.pt`` written by the original TencentPretrain's preprocess.py.

The original's dataset file is a stream of ``pickle.dump`` records with no header. This module reads the two
record layouts of LLaMA training and writes a dataset directory of this version, with no need for the corpus:

* ``lm`` / ``llm_pretrain``: ``((ids, pad_num), [length])``, ``ids`` at most ``seq_length + 1`` tokens
  (``<s> document </s>`` cut in chunks). Every token is scored, as in our ``lm``; the original's one extra
  "predict padding" target after a document's last chunk is not reproduced.
* ``llm_sft``: ``((src, pad_num), [prompt_length, total_length])``, ``src`` = ``<s> prompt response </s>``
  (at most ``seq_length``). Response tokens (and ``</s>``) are scored; prompt tokens too with
  ``train_on_prompt`` (the original scored them unless it ran with ``--prefix_lm_loss``).

Records are unpickled with a loader that refuses every class, so a foreign file cannot run code: only the
tuples, lists and ints of these layouts are accepted. The output is written like preprocess.py's (a temporary
directory moved into place), with a manifest that records the tokenizer, so pretrain.py checks it as usual.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tencentpretrain.data.builder import _log_summary, _manifest, _payload_dtype, _write_index, staged_directory
from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import INDEX_FILE, MASK_FILE, TOKENS_FILE, write_manifest
from tencentpretrain.errors import DataError
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.tokenizers import TokenizerConfig, build_tokenizer

RECORD_LAYOUTS = {"lm": "lm", "llm_pretrain": "lm", "llm_sft": "sft", "alpaca": "sft"}
CONTEXT, SCORED, RESPONSE = 0, 1, 2  # loss-mask values of the dataset format


class _RecordUnpickler(pickle.Unpickler):
    """Unpickles plain data only: any class or function reference is an error, never an import."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the record refers to {module}.{name}")


def iter_original_records(path: str) -> Iterator[Any]:
    """The records of an original dataset file, in order."""
    with open(path, "rb") as f:
        number = 0
        while True:
            number += 1
            try:
                yield _RecordUnpickler(f).load()
            except EOFError:
                return
            except (pickle.UnpicklingError, ValueError, TypeError, io.UnsupportedOperation) as e:
                raise DataError(f"{path}: record {number} is not a TencentPretrain dataset record ({e})") from None


def parse_record(record: Any, layout: str, number: int, source: str) -> tuple[list[int], int]:
    """(token ids, prompt length) of one record; the prompt length is 0 for ``lm`` records."""
    try:
        (ids, pad_num), seg_pos = record
        ids = list(ids)
        if not all(isinstance(i, int) for i in ids) or not isinstance(pad_num, int):
            raise TypeError("token ids must be ints")
        if layout == "lm":
            return ids, 0
        prompt_length, total = seg_pos
        if not 0 < prompt_length <= total <= len(ids):
            raise ValueError(f"segment positions {seg_pos} do not fit {len(ids)} tokens")
        return ids[:total], prompt_length
    except (TypeError, ValueError) as e:
        kind = "((ids, pad_num), [length])" if layout == "lm" else "((src, pad_num), [prompt_length, total_length])"
        raise DataError(f"{source}: record {number} is not an original {layout} record {kind}: {e}; check "
                        "--data_processor") from None


def import_original_dataset(
    original_path: str, config: DataConfig, tokenizer_config: TokenizerConfig
) -> dict[str, Any]:
    """Write ``config.dataset_path`` from the original dataset file at ``original_path``; returns the manifest.

    ``config.data_processor`` says which layout the records have (``lm``, ``llm_pretrain``, ``llm_sft``/
    ``alpaca``); ``config.seq_length`` must be the one the file was built with (longer records are an error).
    """
    layout = RECORD_LAYOUTS.get(config.data_processor)
    if layout is None:
        raise DataError(f"--data_processor {config.data_processor!r}: the importer reads the original's "
                        f"{', '.join(RECORD_LAYOUTS)} records")
    if not os.path.isfile(original_path):
        raise DataError(f"{original_path}: no such file")
    tokenizer = build_tokenizer(tokenizer_config)
    processor = DATA_PROCESSORS.get(config.data_processor)(tokenizer, config)
    dtype = _payload_dtype(processor, tokenizer)
    with staged_directory(Path(config.dataset_path)) as work:
        counts, lengths = _write_records(original_path, layout, config, tokenizer.vocab_size, dtype, work)
        _write_index(work / INDEX_FILE, np.asarray(lengths, dtype="<u4"))
        manifest = _manifest(config, processor, tokenizer, counts, os.path.getsize(original_path), work)
        manifest["imported_from"] = {"path": original_path, "format": "original TencentPretrain pickle stream"}
        write_manifest(work, manifest)
    _log_summary(config, manifest["counts"])
    return manifest


def _write_records(path: str, layout: str, config: DataConfig, vocab_size: int, dtype: np.dtype,
                   work: Path) -> tuple[Counter[str], list[int]]:
    counts: Counter[str] = Counter()
    lengths: list[int] = []
    limit = config.seq_length + 1 if layout == "lm" else config.seq_length
    prompt_mark = SCORED if config.train_on_prompt else CONTEXT
    with contextlib.ExitStack() as files:
        tokens = files.enter_context(open(work / TOKENS_FILE, "wb"))
        masks = files.enter_context(open(work / MASK_FILE, "wb")) if layout == "sft" else None
        for number, record in enumerate(iter_original_records(path), start=1):
            ids, prompt = parse_record(record, layout, number, path)
            if len(ids) > limit:
                raise DataError(f"{path}: record {number} has {len(ids)} tokens, more than --seq_length "
                                f"{config.seq_length} allows; pass the --seq_length the file was built with")
            if ids and not 0 <= min(ids) <= max(ids) < vocab_size:
                raise DataError(f"{path}: record {number} has token ids outside the tokenizer's {vocab_size} "
                                "pieces; pass the tokenizer the file was built with")
            if len(ids) < 2:
                counts["skipped:empty_loss"] += 1
                continue
            tokens.write(np.asarray(ids, dtype=dtype).tobytes())
            if masks is not None:
                masks.write(np.array([prompt_mark] * prompt + [RESPONSE] * (len(ids) - prompt), np.uint8).tobytes())
            lengths.append(len(ids))
            scored = len(ids) - 1 if layout == "lm" or config.train_on_prompt else len(ids) - prompt
            counts.update(lines=1, documents=1, instances=1, tokens=len(ids), loss_tokens=scored)
    if not lengths:
        raise DataError(f"{path}: no records to import")
    return counts, lengths
