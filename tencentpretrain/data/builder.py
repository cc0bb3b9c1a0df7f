"""Preprocessing: corpus file -> dataset directory (format in ``tencentpretrain.data.dataset``).

The corpus is cut into byte ranges (at most 16 MiB, about four per process). A line belongs to the range its
first byte lies in; a worker seeks to its range, skips the partial line there and reads whole lines until it
passes the range end, so no line is read twice or missed, however long. Each range is processed into a shard of
its own inside a temporary directory next to the output; shards are concatenated in range order at the end. Every
line is processed on its own, so the output depends neither on the ranges nor on ``--processes_num``.
``--full_sentences`` packing is done on the concatenated stream, after all ranges, for the same reason.

The dataset appears at ``dataset_path`` only when complete (a rename); on any failure, including Ctrl-C, the
temporary directory is removed and an existing dataset at ``dataset_path`` is left as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from tencentpretrain import __version__, atomic
from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.dataset import (
    FLAGS_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    MASK_FILE,
    TOKENS_FILE,
    token_dtype,
    write_manifest,
)
from tencentpretrain.data.processors.base import BadLine, Instance, Processor, SkipSample
from tencentpretrain.errors import DataError
from tencentpretrain.registry import DATA_PROCESSORS
from tencentpretrain.tokenizers.base import Tokenizer, TokenizerConfig, build_tokenizer

logger = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 16 << 20  # largest range of the corpus per task (bounds a worker's memory)
MIN_CHUNK_BYTES = 256 << 10
MAX_REPORTED_BAD_LINES = 5
# The manifest's tokenizer entry of data built without one (images): one vocabulary row, as HF ViT conversions.
NO_TOKENIZER = {"name": None, "vocab_size": 1, "bos_id": None, "eos_id": None, "pad_id": None, "unk_id": None,
                "files": []}
# What the skip reasons in the manifest mean, for the log.
SKIP_REASONS = {
    "empty_line": "blank lines",
    "empty_sample": "records whose fields are all empty",
    "empty_loss": "instances with no token to predict (e.g. the 1-token tail of a document)",
    "prompt_too_long": "samples whose prompt alone fills --seq_length",
    "no_assistant_turn": "conversations without an assistant turn",
    "short_document": "documents too short for an instance (fewer than two tokens)",
    "header": "TSV header lines",
}


class ChunkTask(NamedTuple):
    index: int
    start: int  # first byte of the range
    end: int  # one past the last byte


class ChunkResult(NamedTuple):
    index: int
    nbytes: int
    counts: dict[str, int]
    bad_lines: list[tuple[int, str]]  # (byte offset of the line, message), at most MAX_REPORTED_BAD_LINES


class LineError(Exception):
    """A malformed line in a worker; the parent turns the byte offset into a line number."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(offset, message)
        self.offset = offset
        self.message = message


def build_dataset(
    config: DataConfig, tokenizer_config: TokenizerConfig, *, chunk_bytes: int | None = None
) -> dict[str, Any]:
    """Preprocess ``config.corpus_path`` into a dataset directory at ``config.dataset_path``.

    ``chunk_bytes`` overrides the size of the byte ranges handed to workers (tests use tiny ones). Returns the
    manifest that was written. Raises DataError / TokenizerError / ConfigError on bad input, leaving
    nothing behind.
    """
    corpus_bytes = _check_corpus(config.corpus_path)
    tokenizer = _build_tokenizer(config, tokenizer_config)
    processor = DATA_PROCESSORS.get(config.data_processor)(tokenizer, config)  # validates options early
    destination = Path(config.dataset_path)
    check_destination(destination)  # before any work
    with staged_directory(destination) as work:
        (work / "shards").mkdir()
        tasks = split_ranges(corpus_bytes, chunk_bytes or default_chunk_bytes(corpus_bytes, config.processes_num))
        results = _run_tasks(tasks, config, tokenizer_config, work / "shards", corpus_bytes)
        counts = _merge_shards(work, results, processor, _payload_dtype(processor, tokenizer))
        manifest = _manifest(config, processor, tokenizer, counts, corpus_bytes, work)
        write_manifest(work, manifest)
    _log_summary(config, manifest["counts"])
    return manifest


@contextlib.contextmanager
def staged_directory(destination: Path) -> Iterator[Path]:
    """A fresh directory beside ``destination`` to write a dataset into (``atomic.staged_directory``): it
    replaces ``destination`` when the block ends without an error and is removed otherwise, so no partial dataset
    is ever left behind. ``destination`` must be absent, empty or a dataset directory (``check_destination``)."""
    check_destination(destination)
    with atomic.staged_directory(destination, overwrite=True) as work:
        yield Path(work)


def _build_tokenizer(config: DataConfig, tokenizer_config: TokenizerConfig) -> Tokenizer | None:
    """The tokenizer, or None for processors that need none (images)."""
    if not DATA_PROCESSORS.get(config.data_processor).needs_tokenizer:
        return None
    return build_tokenizer(tokenizer_config)


def _payload_dtype(processor: Processor, tokenizer: Tokenizer | None) -> np.dtype:
    """dtype of tokens.bin: the processor's (images: uint8) or the smallest that holds every token id."""
    dtype = processor.payload_dtype()
    if dtype is not None:
        return np.dtype(dtype)
    assert tokenizer is not None
    return token_dtype(tokenizer.vocab_size)


def default_chunk_bytes(corpus_bytes: int, processes: int) -> int:
    """About four ranges per process, between 256 KiB and 16 MiB."""
    return int(min(MAX_CHUNK_BYTES, max(MIN_CHUNK_BYTES, -(-corpus_bytes // (4 * processes)))))


def split_ranges(total: int, chunk_bytes: int) -> list[ChunkTask]:
    """Consecutive byte ranges of ``chunk_bytes`` covering ``[0, total)``."""
    return [ChunkTask(i, s, min(s + chunk_bytes, total)) for i, s in enumerate(range(0, total, chunk_bytes))]


# ---------------------------------------------------------------------------------------------- checks
def _check_corpus(path: str) -> int:
    if not os.path.isfile(path):
        raise DataError(f"{path}: corpus file not found (--corpus_path)")
    size = os.path.getsize(path)
    if size == 0:
        raise DataError(f"{path}: the corpus is empty")
    return size


def check_destination(destination: Path) -> None:
    """Refuse a ``--dataset_path`` that is anything but absent, an empty directory or a dataset directory: a
    regular file (the corpus itself, an original TencentPretrain dataset.pt, ...) or a foreign directory is never
    replaced."""
    if not destination.exists() and not destination.is_symlink():
        return
    if destination.is_dir():
        if (destination / MANIFEST_FILE).is_file() or not any(destination.iterdir()):
            return
        what = "is a directory but not a dataset directory (no manifest.json)"
    elif destination.is_file():
        what = ("is a file, not a dataset directory (an original TencentPretrain dataset.pt? convert it with "
                "scripts/convert_original_dataset.py)")
    else:
        what = "exists and is not a dataset directory"
    raise DataError(f"{destination}: {what}; refusing to overwrite it: choose another --dataset_path")


# ---------------------------------------------------------------------------------------------- workers
_WORKER: dict[str, Any] = {}


def _init_worker(config: DataConfig, tokenizer_config: TokenizerConfig, shard_dir: Path) -> None:
    tokenizer = _build_tokenizer(config, tokenizer_config)
    _WORKER["processor"] = processor = DATA_PROCESSORS.get(config.data_processor)(tokenizer, config)
    _WORKER["dtype"] = _payload_dtype(processor, tokenizer)
    _WORKER["config"] = config
    _WORKER["shard_dir"] = shard_dir


def _run_tasks(
    tasks: list[ChunkTask], config: DataConfig, tokenizer_config: TokenizerConfig, shard_dir: Path, total: int
) -> list[ChunkResult]:
    """Process every range, in worker processes when ``processes_num > 1``; results in task order."""
    progress = tqdm(total=total, unit="B", unit_scale=True, desc="preprocess", disable=not sys.stderr.isatty())
    results: list[ChunkResult] = []
    try:
        for result in _results(tasks, config, tokenizer_config, shard_dir):
            results.append(result)
            progress.update(result.nbytes)
    except LineError as e:
        hint = "" if config.skip_bad_lines else " (pass --skip_bad_lines to count and skip such lines)"
        line = line_number(config.corpus_path, e.offset)
        raise DataError(f"{config.corpus_path}:{line}: {e.message}{hint}") from None
    finally:
        progress.close()
    results.sort()
    _report_bad_lines(config.corpus_path, results)
    return results


def _report_bad_lines(path: str, results: list[ChunkResult]) -> None:
    """Log the first few lines skipped under --skip_bad_lines, with their line numbers."""
    bad = [b for r in results for b in r.bad_lines][:MAX_REPORTED_BAD_LINES]
    for offset, message in bad:
        logger.warning("%s:%d: skipped: %s", path, line_number(path, offset), message)


def _results(
    tasks: list[ChunkTask], config: DataConfig, tokenizer_config: TokenizerConfig, shard_dir: Path
) -> Iterator[ChunkResult]:
    workers = min(config.processes_num, len(tasks))
    if workers <= 1:
        _init_worker(config, tokenizer_config, shard_dir)
        try:
            yield from map(_process_chunk, tasks)
        finally:
            _WORKER.clear()
        return
    with multiprocessing.get_context().Pool(
        workers, initializer=_init_worker, initargs=(config, tokenizer_config, shard_dir)
    ) as pool:
        yield from pool.imap_unordered(_process_chunk, tasks)


def _process_chunk(task: ChunkTask) -> ChunkResult:
    """Turn the lines that start in ``[task.start, task.end)`` into a shard of the output."""
    processor: Processor = _WORKER["processor"]
    config: DataConfig = _WORKER["config"]
    shard = _Shard(_WORKER["dtype"], processor)
    counts: Counter[str] = Counter()
    bad_lines: list[tuple[int, str]] = []
    read = _read_documents if processor.reads_documents else _read_lines
    for offset, raw in read(config.corpus_path, task.start, task.end):
        counts["lines"] += 1
        try:
            text = _decode(raw, first=offset == 0)
            kept = shard.add(processor.process(text, counts), counts)
        except SkipSample as skip:
            counts[f"skipped:{skip.reason}"] += 1
            continue
        except BadLine as bad:
            if not config.skip_bad_lines:
                raise LineError(offset, bad.message) from None
            counts[f"skipped:{bad.reason}"] += 1
            if len(bad_lines) < MAX_REPORTED_BAD_LINES:
                bad_lines.append((offset, bad.message))
            continue
        counts["documents"] += int(kept > 0)
    shard.write(_WORKER["shard_dir"], task.index)
    return ChunkResult(task.index, task.end - task.start, dict(counts), bad_lines)


def _read_lines(path: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, line)`` for every line whose first byte lies in ``[start, end)``."""
    with open(path, "rb") as f:
        pos = start
        if start > 0:
            f.seek(start - 1)
            pos = start - 1 + len(f.readline())  # skip the line that began in the previous range
        while pos < end:
            raw = f.readline()
            if not raw:
                return
            yield pos, raw
            pos += len(raw)


def _read_documents(path: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, document)`` for every blank-line separated document whose first line starts in
    ``[start, end)``; a document is its lines joined as they were (newlines kept inside)."""
    with open(path, "rb") as f:
        pos = start
        if start > 0:
            f.seek(start - 1)
            pos = start - 1 + len(f.readline())  # the first line that starts in the range
            if pos < end and not _previous_line_blank(f, pos):  # inside a document of an earlier range
                f.seek(pos)
                while True:
                    raw = f.readline()
                    if not raw:
                        return
                    pos += len(raw)
                    if not raw.strip():
                        break
        f.seek(pos)
        lines: list[bytes] = []
        doc_start = pos
        while True:
            raw = f.readline()
            if not raw or not raw.strip():
                if lines:
                    yield doc_start, b"".join(lines)
                    lines = []
                if not raw:
                    return
                pos += len(raw)
                continue
            if not lines:
                if pos >= end:
                    return
                doc_start = pos
            lines.append(raw)
            pos += len(raw)


def _previous_line_blank(f: Any, pos: int) -> bool:
    """Whether the line that ends just before byte ``pos`` (a line start > 0) is blank (whitespace only)."""
    i = pos - 2  # pos - 1 is that line's newline
    while i >= 0:
        f.seek(i)
        byte = f.read(1)
        if byte == b"\n":
            return True
        if not byte.isspace():
            return False
        i -= 1
    return True


def _decode(raw: bytes, *, first: bool) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 4]
        raise BadLine("invalid_utf8", f"invalid UTF-8 at byte {e.start} of the line ({bad!r})") from None
    if first and text.startswith("\ufeff"):
        text = text[1:]  # byte-order mark
    return text.rstrip("\r\n")


class _Shard:
    """Instances of one range, as numpy arrays until written.

    For language-model processors (``cuts_instances``) an instance longer than ``max_tokens`` is cut into
    consecutive chunks of ``max_tokens`` (the last one shorter), and a chunk without a scored token (say the
    1-token tail of a document) is dropped and counted as ``empty_loss``. In stream mode (``--full_sentences``)
    documents are only appended; cutting happens at merge. Other processors' instances are kept as they are,
    with their token flags and labels.
    """

    def __init__(self, dtype: np.dtype, processor: Processor) -> None:
        self.dtype, self.uses_mask, self.stream = dtype, processor.uses_mask, processor.packs_stream
        self.max_tokens, self.cuts = processor.max_tokens, processor.cuts_instances
        self.has_flags, self.has_labels = processor.has_token_flags, processor.has_labels
        self.tokens: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.flags: list[np.ndarray] = []
        self.labels: list[int] = []
        self.lengths: list[int] = []

    def add(self, instances: list[Instance], counts: Counter[str]) -> int:
        """Append ``instances``; returns how many chunks were kept."""
        kept = 0
        for instance in instances:
            ids = np.asarray(instance.tokens).astype(self.dtype, copy=False)  # (L,); ids < vocab_size fit
            marks = None if instance.mask is None else np.asarray(instance.mask, dtype=np.uint8)  # (L,)
            if self.stream:
                if self.has_flags:
                    self.flags.append(np.asarray(instance.flags, dtype=np.uint8))
                self._append(ids, marks, counts, scored=None)
                kept += 1
            elif not self.cuts:
                self._add_record(ids, marks, instance, counts)
                kept += 1
            elif marks is None:
                kept += self._add_unmasked(ids, counts)
            else:
                kept += self._add_masked(ids, marks, counts)
        return kept

    def _add_record(self, ids: np.ndarray, marks: np.ndarray | None, instance: Instance, counts: Counter[str]) -> None:
        """A finished instance of a non-LM processor, with its flags and label."""
        if self.has_flags:
            self.flags.append(np.asarray(instance.flags, dtype=np.uint8))
        if self.has_labels:
            self.labels.append(int(instance.label))
        self._append(ids, marks, counts, scored=len(ids) if marks is None else int(np.count_nonzero(marks)))

    def _add_unmasked(self, ids: np.ndarray, counts: Counter[str]) -> int:
        """Chunks of a document where every token is scored: only a 1-token tail can lack a target."""
        full, tail = divmod(len(ids), self.max_tokens)
        if tail == 1:
            ids, tail = ids[:-1], 0
            counts["skipped:empty_loss"] += 1
        if len(ids) == 0:
            return 0
        chunks = full + (tail > 0)
        self.tokens.append(ids)
        self.lengths.extend([self.max_tokens] * full + ([tail] if tail else []))
        counts["tokens"] += len(ids)
        counts["instances"] += chunks
        counts["loss_tokens"] += len(ids) - chunks
        return chunks

    def _add_masked(self, ids: np.ndarray, marks: np.ndarray, counts: Counter[str]) -> int:
        kept = 0
        for start in range(0, len(ids), self.max_tokens):
            end = min(start + self.max_tokens, len(ids))
            scored = int(np.count_nonzero(marks[start + 1 : end]))
            if scored == 0:
                counts["skipped:empty_loss"] += 1
                continue
            self._append(ids[start:end], marks[start:end], counts, scored)
            kept += 1
        return kept

    def _append(self, ids: np.ndarray, marks: np.ndarray | None, counts: Counter[str], scored: int | None) -> None:
        self.tokens.append(ids)
        if self.uses_mask:
            self.masks.append(marks)
        counts["tokens"] += len(ids)
        if scored is not None:
            self.lengths.append(len(ids))
            counts["instances"] += 1
            counts["loss_tokens"] += scored

    def write(self, directory: Path, index: int) -> None:
        parts = {"tok": (self.tokens, self.dtype), "len": ([np.asarray(self.lengths, "<u4")], np.dtype("<u4"))}
        if self.uses_mask:
            parts["mask"] = (self.masks, np.dtype(np.uint8))
        if self.has_flags:
            parts["flags"] = (self.flags, np.dtype(np.uint8))
        if self.has_labels:
            parts["lab"] = ([np.asarray(self.labels, "<i8")], np.dtype("<i8"))
        for name, (arrays, dtype) in parts.items():
            values = np.concatenate(arrays) if arrays else np.zeros(0, dtype)
            values.astype(dtype.newbyteorder("<"), copy=False).tofile(directory / f"{index:06d}.{name}")


def line_number(path: str, offset: int) -> int:
    """1-based number of the line that starts at byte ``offset`` (read only on the error path)."""
    newlines, done = 0, 0
    with open(path, "rb") as f:
        while done < offset:
            block = f.read(min(1 << 20, offset - done))
            if not block:
                break
            newlines += block.count(b"\n")
            done += len(block)
    return newlines + 1


# ---------------------------------------------------------------------------------------------- merge
def _merge_shards(work: Path, results: list[ChunkResult], processor: Processor, dtype: np.dtype) -> Counter[str]:
    """Concatenate shards in range order into the final files and write the index; returns the counts."""
    counts: Counter[str] = Counter()
    lengths: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    shards = work / "shards"
    outputs = {"tok": open(work / TOKENS_FILE, "wb")}
    if processor.uses_mask:
        outputs["mask"] = open(work / MASK_FILE, "wb")
    if processor.has_token_flags:
        outputs["flags"] = open(work / FLAGS_FILE, "wb")
    try:
        for result in results:
            counts.update(result.counts)
            for name, out in outputs.items():
                with open(shards / f"{result.index:06d}.{name}", "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
            if not processor.packs_stream:
                lengths.append(np.fromfile(shards / f"{result.index:06d}.len", dtype="<u4"))
            if processor.has_labels:
                labels.append(np.fromfile(shards / f"{result.index:06d}.lab", dtype="<i8"))
    finally:
        for out in outputs.values():
            out.close()
    shutil.rmtree(shards)
    if processor.packs_stream:
        per_token = [(work / TOKENS_FILE, dtype.itemsize)] + [(work / FLAGS_FILE, 1)] * processor.has_token_flags
        packed = _pack_stream(per_token, processor.max_tokens, counts)
        lengths = [np.tile(packed, processor.stream_copies)]
        _repeat_files([path for path, _ in per_token], processor.stream_copies, counts)
    _write_index(work / INDEX_FILE, np.concatenate(lengths) if lengths else np.zeros(0, "<u4"))
    if processor.has_labels:
        np.save(work / LABELS_FILE, np.concatenate(labels) if labels else np.zeros(0, "<i8"))
    return counts


def _pack_stream(per_token: list[tuple[Path, int]], max_tokens: int, counts: Counter[str]) -> np.ndarray:
    """Cut the packed token stream into instances of ``max_tokens``; a 1-token tail has no target (or, for
    ``mlm``, only the last [SEP]) and is cut off. ``per_token``: (file, bytes per token) of the token file first,
    then the other per-token files, which are cut alike."""
    tokens_path, itemsize = per_token[0]
    total = tokens_path.stat().st_size // itemsize
    full, tail = divmod(total, max_tokens)
    if tail == 1:
        for path, size in per_token:
            with open(path, "r+b") as f:
                f.truncate((total - 1) * size)
        counts["skipped:empty_loss"] += 1
        counts["tokens"] -= 1
        tail = 0
    lengths = np.full(full + (tail > 0), max_tokens, dtype="<u4")
    if tail:
        lengths[-1] = tail
    counts["instances"] = len(lengths)
    counts["loss_tokens"] = int(lengths.sum()) - len(lengths)
    return lengths


def _repeat_files(paths: list[Path], copies: int, counts: Counter[str]) -> None:
    """Append ``copies - 1`` more copies of each file's content to it (packed instances stored several times)."""
    if copies <= 1:
        return
    for path in paths:
        size = path.stat().st_size
        with open(path, "rb") as source, open(path, "ab") as out:
            for _ in range(copies - 1):
                source.seek(0)
                left = size
                while left:
                    block = source.read(min(1 << 20, left))
                    out.write(block)
                    left -= len(block)
    for key in ("tokens", "instances", "loss_tokens"):
        counts[key] *= copies


def _write_index(path: Path, lengths: np.ndarray) -> None:
    offsets = np.zeros(len(lengths) + 1, dtype="<i8")  # (N + 1,)
    np.cumsum(lengths, out=offsets[1:])
    np.save(path, offsets)


def _manifest(
    config: DataConfig, processor: Processor, tokenizer: Tokenizer | None, counts: Counter[str], corpus_bytes: int,
    work: Path,
) -> dict[str, Any]:
    skipped = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("skipped:")}
    summary = {
        key: int(counts[key]) for key in ("lines", "documents", "instances", "tokens", "loss_tokens", "truncated")
    }
    summary["skipped"] = skipped
    if summary["instances"] == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in skipped.items()) or "none"
        raise DataError(
            f"{config.corpus_path}: no training instances were produced from {summary['lines']} lines "
            f"(skipped: {reasons}); check --data_processor, --seq_length and the corpus format"
        )
    files = {"tokens": TOKENS_FILE, "loss_mask": MASK_FILE if processor.uses_mask else None, "index": INDEX_FILE}
    # Version 2 only where its additions are used: a language-model dataset stays readable by version-1 readers.
    version = 1 if processor.cuts_instances else FORMAT_VERSION
    if version == 2:
        files["token_flags"] = FLAGS_FILE if processor.has_token_flags else None
        files["labels"] = LABELS_FILE if processor.has_labels else None
    return {
        "format": FORMAT_NAME,
        "format_version": version,
        "created_with": f"tencentpretrain {__version__}",
        "processor": processor.name,
        "data_processor": config.data_processor,
        "options": processor.options(),
        "seq_length": config.seq_length,
        "seed": config.seed,
        "token_dtype": _payload_dtype(processor, tokenizer).str,
        "files": files,
        "tokenizer": tokenizer.describe() if tokenizer is not None else NO_TOKENIZER,
        "corpus": {"path": config.corpus_path, "bytes": corpus_bytes},
        "counts": summary,
        "index_sha256": hashlib.sha256((work / INDEX_FILE).read_bytes()).hexdigest(),
    }




def _log_summary(config: DataConfig, counts: dict[str, Any]) -> None:
    logger.info(
        "%s: %d instances, %d tokens (%d scored) from %d documents in %d lines",
        config.dataset_path, counts["instances"], counts["tokens"], counts["loss_tokens"], counts["documents"],
        counts["lines"],
    )
    if counts["truncated"]:
        logger.info("%d samples were truncated to --seq_length %d", counts["truncated"], config.seq_length)
    for reason, n in counts["skipped"].items():
        logger.warning("skipped %d %s [%s]", n, SKIP_REASONS.get(reason, "malformed lines"), reason)
