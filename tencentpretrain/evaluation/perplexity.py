"""Perplexity of a language model on a text corpus, and the one function that sums token losses.

A corpus is one document per line (plain text) or JSON Lines with a ``"text"`` field. Each document becomes
``[bos] + tokens`` (optionally ``+ [eos]``) and every token after the first is scored once. Documents longer
than the context are read with a sliding window: every window holds ``seq_length`` tokens of input and scores
only the tokens no earlier window scored, so each scored token sees at least ``seq_length - stride`` tokens of
context. With ``stride == seq_length`` the windows do not overlap (fastest, least context).

The numbers are token-weighted over the whole corpus:

* ``loss`` = total negative log-likelihood (nats) / scored tokens, ``perplexity = exp(loss)``;
* ``bits_per_character`` = total nats / ln 2 / characters of the documents' text (and ``bits_per_byte`` per
  UTF-8 byte). These do not depend on the tokenizer, so they compare a model with an extended Chinese
  vocabulary against the original, which perplexity cannot.

``evaluate_dataset_loss(model, batches) -> (loss_sum, tokens)`` is what the trainer's evaluation calls too, so
``scripts/evaluate_ppl.py`` and training report the same number on the same data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.evaluation.common import json_line, nonblank_lines, progress, warn_if_beyond_context
from tencentpretrain.models.capabilities import produces_vocabulary_logits

logger = logging.getLogger(__name__)

PROJECTION_CHUNK = 4096  # rows projected to the vocabulary at once (bounds the (N, V) float32 logits)
SORT_BUFFER_BATCHES = 32  # windows are sorted by length within this many batches to reduce padding


# ---------------------------------------------------------------------------------------------- corpus
def read_documents(path: str, fmt: str = "auto", *, text_key: str = "text") -> list[str]:
    """The documents of a corpus file.

    Args:
        fmt: ``text`` (one document per line), ``jsonl`` (one JSON object per line with ``text_key``), or
            ``auto`` (``jsonl`` for a .jsonl/.json file name, else ``text``).
    Empty lines are skipped; a malformed JSON line is a DataError naming the line.
    """
    if fmt == "auto":
        fmt = "jsonl" if path.endswith((".jsonl", ".json")) else "text"
    if fmt not in ("text", "jsonl"):
        raise ConfigError(f"corpus format {fmt!r}: choose from auto, text, jsonl")
    documents = [_json_text(line, text_key, path, number) if fmt == "jsonl" else line
                 for number, line in nonblank_lines(path)]
    if not documents:
        raise DataError(f"{path}: no documents (the file is empty or blank)")
    return documents


def _json_text(line: str, key: str, path: str, number: int) -> str:
    obj = json_line(line, path, number, hint="; use --corpus_format text for plain text")
    if not isinstance(obj, dict) or not isinstance(obj.get(key), str):
        raise DataError(f"{path}:{number}: expected a JSON object with a string field {key!r}")
    return obj[key]


# ---------------------------------------------------------------------------------------------- windows
class Window(NamedTuple):
    """One model input: ``src`` tokens, their next tokens ``tgt``, and the first position that is scored."""

    src: list[int]
    tgt: list[int]
    first_scored: int  # positions [first_scored, len(src)) are scored; earlier ones are context only


def document_windows(ids: Sequence[int], seq_length: int, stride: int) -> Iterator[Window]:
    """Sliding windows over a token sequence (``[bos] + tokens`` already added).

    The first window is ``ids[:seq_length + 1]`` (inputs and shifted targets) and scores everything; each
    next window ends ``stride`` targets later, starts ``seq_length`` inputs before its end, and scores only
    its last ``stride`` targets (fewer in the last window). Every target is scored exactly once.
    """
    inputs = len(ids) - 1  # number of (input, target) pairs
    if inputs < 1:
        return
    end = min(seq_length, inputs)
    begin, first_scored = 0, 0
    while True:
        yield Window(list(ids[begin:end]), list(ids[begin + 1 : end + 1]), first_scored)
        if end == inputs:
            return
        scored_until = end
        end = min(end + stride, inputs)
        begin = max(end - seq_length, 0)
        first_scored = scored_until - begin


class WindowBatch(NamedTuple):
    """A right-padded batch of windows in the training ``Batch`` layout."""

    src: torch.Tensor  # (B, T) input ids
    tgt: torch.Tensor  # (B, T) next-token ids
    seg: torch.Tensor  # (B, T) 1 for tokens, 0 for padding
    loss_mask: torch.Tensor  # (B, T) bool, the scored positions


def collate_windows(windows: Sequence[Window], pad_id: int) -> WindowBatch:
    """Right-pad ``windows`` to the longest one."""
    length = max(len(w.src) for w in windows)
    src = torch.full((len(windows), length), pad_id, dtype=torch.long)
    tgt = torch.full_like(src, pad_id)
    seg = torch.zeros_like(src)
    loss_mask = torch.zeros(src.shape, dtype=torch.bool)
    for row, w in enumerate(windows):
        n = len(w.src)
        src[row, :n] = torch.tensor(w.src)
        tgt[row, :n] = torch.tensor(w.tgt)
        seg[row, :n] = 1
        loss_mask[row, w.first_scored : n] = True
    return WindowBatch(src, tgt, seg, loss_mask)


def batch_windows(windows: Iterable[Window], batch_size: int, pad_id: int) -> Iterator[WindowBatch]:
    """Batches of ``batch_size`` windows, windows of similar length together (sorted within a buffer)."""
    buffer: list[Window] = []

    def flush() -> Iterator[WindowBatch]:
        buffer.sort(key=lambda w: len(w.src), reverse=True)
        for i in range(0, len(buffer), batch_size):
            yield collate_windows(buffer[i : i + batch_size], pad_id)
        buffer.clear()

    for window in windows:
        buffer.append(window)
        if len(buffer) == batch_size * SORT_BUFFER_BATCHES:
            yield from flush()
    if buffer:
        yield from flush()


# ---------------------------------------------------------------------------------------------- loss
def _core(model: nn.Module) -> nn.Module:
    """The Model inside a DDP / DeepSpeed wrapper."""
    while hasattr(model, "module") and not hasattr(model, "hidden_states"):
        model = model.module
    return model


def batch_loss_sum(
    model: nn.Module,
    src: torch.Tensor,
    tgt: torch.Tensor | dict[str, torch.Tensor],
    seg: torch.Tensor,
    loss_mask: torch.Tensor | None = None,
    **decoder_inputs: torch.Tensor,
) -> tuple[torch.Tensor, int]:
    """Summed token negative log-likelihood (nats, float32 scalar tensor) over ``loss_mask`` and the number
    of scored tokens, from the model's target that produces vocabulary logits (``Target.vocabulary_target``:
    next tokens for ``lm``, masked tokens for ``mlm``). A model with no such target (a ViT classifier) gives its
    own loss summed over the batch's examples, and the number of examples.

    src, seg: (B, T); tgt, loss_mask: (B, T) (B, T' with a decoder), ``tgt`` may be the {target: labels} dict
    of a multi-target batch; ``loss_mask`` defaults to ``seg > 0`` (the decoder's ``tgt_seg > 0``).
    ``decoder_inputs``: ``tgt_in``/``tgt_seg`` of an encoder-decoder batch.

    This is plain cross-entropy: the config's ``label_smoothing`` is a training regulariser and is not applied.
    """
    core = _core(model)
    device = next(core.parameters()).device
    if not any(produces_vocabulary_logits(n) for n in core.target.names):
        return _example_loss_sum(core, src, tgt, seg, loss_mask, device)
    name = core.target.vocabulary_target()
    labels_all = (tgt[name] if isinstance(tgt, dict) else tgt).to(device)
    decoder_inputs = {k: v.to(device) for k, v in decoder_inputs.items()}
    hidden, scored_seg = core.target_inputs(src.to(device), seg.to(device), **decoder_inputs)  # (B, T, H), (B, T)
    mask = (scored_seg > 0) if loss_mask is None else loss_mask.to(device)
    kept, labels = hidden[mask], labels_all[mask]  # (N, H), (N,)
    total = torch.zeros((), dtype=torch.float32, device=device)
    for start in range(0, kept.shape[0], PROJECTION_CHUNK):
        logits = core.target.logits(kept[start : start + PROJECTION_CHUNK]).float()  # (n, V)
        total = total + F.cross_entropy(logits, labels[start : start + PROJECTION_CHUNK], reduction="sum")
    return total, int(labels.shape[0])


def _example_loss_sum(
    core: nn.Module,
    src: torch.Tensor,
    tgt: torch.Tensor | dict[str, torch.Tensor],
    seg: torch.Tensor,
    loss_mask: torch.Tensor | None,
    device: torch.device,
) -> tuple[torch.Tensor, int]:
    """A model without a vocabulary target (an image classifier): its own loss, a mean over the batch's examples,
    times their number, so the sums over batches divided by the count give the mean classification loss."""
    labels = {k: v.to(device) for k, v in tgt.items()} if isinstance(tgt, dict) else tgt.to(device)
    mask = None if loss_mask is None else loss_mask.to(device)
    out = core(src.to(device), labels, seg.to(device), mask)
    examples = int(src.shape[0])
    return out.loss.float() * examples, examples


@torch.no_grad()
def evaluate_dataset_loss(model: nn.Module, batches: Iterable[Any]) -> tuple[float, int]:
    """Total token loss (nats) and scored-token count over ``batches``: the one implementation behind
    ``scripts/evaluate_ppl.py`` and the trainer's ``--eval_dataset_path`` evaluation.

    Each batch has ``src``, ``tgt``, ``seg`` and optionally ``loss_mask`` and ``model_kwargs()`` (the data
    loader's ``Batch`` or ``Seq2SeqBatch``, a ``WindowBatch``, or any object with those attributes); positions
    where ``loss_mask`` (default ``seg > 0``) is True are scored (see ``batch_loss_sum``; a classifier without a
    vocabulary target counts examples instead). The model (or its DDP / DeepSpeed wrapper) is put in eval mode for
    the call and restored after. Mean loss = ``loss_sum / tokens``; perplexity = ``exp`` of it. Sums are accumulated on the
    device and read once at the end (one host sync). The numbers are this process's: under data parallelism,
    all-reduce both (sum) across ranks before dividing.
    """
    was_training = model.training
    model.eval()
    try:
        loss_sum: torch.Tensor | None = None
        tokens = 0
        for batch in batches:
            decoder_inputs = batch.model_kwargs() if hasattr(batch, "model_kwargs") else {}
            nll, n = batch_loss_sum(model, batch.src, batch.tgt, batch.seg, getattr(batch, "loss_mask", None),
                                    **decoder_inputs)
            loss_sum = nll.double() if loss_sum is None else loss_sum + nll.double()
            tokens += n
    finally:
        model.train(was_training)
    return (0.0 if loss_sum is None else float(loss_sum.item())), tokens


# ---------------------------------------------------------------------------------------------- perplexity
@dataclass(frozen=True, kw_only=True)
class PerplexityConfig:
    """How a corpus is read by the model."""

    seq_length: int  # input tokens per window (the context)
    stride: int | None = None  # new tokens scored per window after the first; None = seq_length (no overlap)
    batch_size: int = 8  # windows per forward pass
    add_bos: bool = True  # start every document with the tokenizer's bos token (as LLaMA was trained)
    add_eos: bool = False  # also score an eos token after every document

    def __post_init__(self) -> None:
        if self.seq_length < 1:
            raise ConfigError(f"seq_length={self.seq_length}: must be at least 1")
        if self.stride is not None and not 1 <= self.stride <= self.seq_length:
            raise ConfigError(f"stride={self.stride}: must be between 1 and seq_length={self.seq_length}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size}: must be at least 1")

    @property
    def window_stride(self) -> int:
        return self.stride or self.seq_length


@dataclass(frozen=True)
class PerplexityResult:
    """Corpus-level, token-weighted numbers."""

    documents: int
    tokens: int  # scored tokens
    characters: int  # characters of the documents' text
    bytes: int  # UTF-8 bytes of the documents' text
    nll_sum: float  # total negative log-likelihood, nats
    loss: float  # nats per token
    perplexity: float
    bits_per_character: float
    bits_per_byte: float
    windows: int  # model inputs (more than documents when documents are longer than seq_length)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_documents(tokenizer, documents: Sequence[str], config: PerplexityConfig) -> list[list[int]]:
    """``[bos] + encode(text) (+ [eos])`` for every document."""
    bos = _special(tokenizer, "bos_id") if config.add_bos else None
    eos = _special(tokenizer, "eos_id") if config.add_eos else None
    encoded = []
    for text in progress(documents, total=len(documents), desc="tokenizing", unit="doc"):
        ids = tokenizer.encode(text)
        encoded.append(([bos] if bos is not None else []) + ids + ([eos] if eos is not None else []))
    return encoded


def _special(tokenizer, attr: str) -> int | None:
    token = getattr(tokenizer, attr)
    if token is None:
        logger.warning("the tokenizer has no %s; documents are scored without it", attr.removesuffix("_id"))
    return token


def evaluate_perplexity(
    model: nn.Module, tokenizer, documents: Sequence[str], config: PerplexityConfig
) -> PerplexityResult:
    """Perplexity and bits per character of ``model`` on ``documents`` (see the module docstring)."""
    warn_if_beyond_context(model, config.seq_length, "seq_length")
    encoded = encode_documents(tokenizer, documents, config)
    if config.add_bos is False and any(len(ids) < 2 for ids in encoded):
        logger.info("documents of one token have nothing to score without a bos token")
    stride = config.window_stride
    windows = [w for ids in encoded for w in document_windows(ids, config.seq_length, stride)]
    if not windows:
        raise DataError("no token to score: every document is empty after tokenization")
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    batches = batch_windows(windows, config.batch_size, pad_id)
    total_batches = math.ceil(len(windows) / config.batch_size)
    batches = progress(batches, total=total_batches, desc="perplexity", unit="batch")
    nll_sum, tokens = evaluate_dataset_loss(model, batches)
    characters = sum(len(text) for text in documents)
    n_bytes = sum(len(text.encode("utf-8")) for text in documents)
    loss = nll_sum / tokens
    return PerplexityResult(
        documents=len(documents),
        tokens=tokens,
        characters=characters,
        bytes=n_bytes,
        nll_sum=nll_sum,
        loss=loss,
        perplexity=math.exp(loss),
        bits_per_character=nll_sum / math.log(2) / max(characters, 1),
        bits_per_byte=nll_sum / math.log(2) / max(n_bytes, 1),
        windows=len(windows),
    )


def format_result(result: PerplexityResult) -> str:
    """A short human-readable report."""
    return (
        f"documents {result.documents}  windows {result.windows}  tokens {result.tokens}  "
        f"characters {result.characters}\n"
        f"loss {result.loss:.4f}  perplexity {result.perplexity:.3f}  "
        f"bits/char {result.bits_per_character:.4f}  bits/byte {result.bits_per_byte:.4f}"
    )
