"""What the original's small inspection scripts compute, as library functions:

* ``word_vectors_text``: the word-embedding table in word2vec text form (``extract_embeddings.py``);
* ``nearest_words``: the vocabulary entries closest to a word by cosine of their embeddings (``topn_words_indep.py``);
* ``contextual_nearest_words``: the candidates that, put in a word's place in a sentence, give the closest hidden
  state there (``topn_words_dep.py``);
* ``sentence_features`` (+ ``whiten``): one pooled vector per sentence (``extract_features.py``);
* ``cloze_predictions``: the top MLM predictions for one masked token per sentence (``cloze_test.py``).

Sentences are encoded as the original did: ``[CLS] tokens [SEP]`` (the tokenizer's bos/eos), cut to
``seq_length``, segment 1, padding with segment 0. Padding never changes a real position's hidden state here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tencentpretrain.errors import CheckpointError, ConfigError, DataError
from tencentpretrain.layers.pooling import pool
from tencentpretrain.models.model import Model
from tencentpretrain.tokenizers import Tokenizer

logger = logging.getLogger(__name__)

WORD_EMBEDDING_KEY = "embedding.word.embedding.weight"


@dataclass(frozen=True)
class ContextualSearch:
    """Settings of ``contextual_nearest_report``."""

    topn: int = 15  # neighbours per line
    seq_length: int = 128  # sentences are cut to this many tokens
    batch_size: int = 64  # candidates per forward pass
    source: str = "<input>"  # the file the lines come from, for messages


def vocabulary(tokenizer: Tokenizer) -> list[str]:
    """The piece of every id."""
    return [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]


def word_embedding_table(state: dict[str, torch.Tensor], *, source: str) -> torch.Tensor:
    """(V, E) word embeddings of a TencentPretrain state_dict."""
    if WORD_EMBEDDING_KEY not in state:
        raise CheckpointError(f"{source}: no {WORD_EMBEDDING_KEY}; is it a TencentPretrain checkpoint?")
    return state[WORD_EMBEDDING_KEY].float()


def _check_rows(table: torch.Tensor, pieces: Sequence[str]) -> None:
    if table.shape[0] < len(pieces):
        raise ConfigError(f"the embedding has {table.shape[0]} rows but the vocabulary has {len(pieces)} tokens: "
                          "pass the checkpoint's own vocabulary")


def word_vectors_text(table: torch.Tensor, pieces: Sequence[str]) -> Iterator[str]:
    """Lines of the word2vec text format: ``"<count> <dim>"``, then ``"<piece> v1 v2 ..."`` per vocabulary entry
    (values as Python prints the float32 value). Rows past the vocabulary (padding rows) are not written."""
    _check_rows(table, pieces)
    yield f"{len(pieces)} {table.shape[1]}\n"
    for piece, row in zip(pieces, table.tolist()):
        yield piece + "".join(f" {value}" for value in row) + "\n"


def nearest_words(table: torch.Tensor, word_id: int, topn: int) -> list[tuple[int, float]]:
    """(id, cosine) of the ``topn`` rows closest to row ``word_id``, best first, ``word_id`` itself left out."""
    sims = F.cosine_similarity(table[word_id].unsqueeze(0), table, dim=-1)  # (V,)
    sims[word_id] = -float("inf")
    best = torch.topk(sims, min(topn, table.shape[0] - 1))
    return list(zip(best.indices.tolist(), best.values.tolist()))


# ---------------------------------------------------------------------- sentences through the model
def sentence_ids(tokenizer: Tokenizer, text: str, seq_length: int) -> list[int]:
    """``[CLS] tokens [SEP]`` cut to ``seq_length`` (the original's layout); empty when the text has no token."""
    ids = tokenizer.encode(text)
    if not ids:
        return []
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    return (bos + ids + eos)[:seq_length]


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(src, seg), each (B, T) with T the longest row; seg is 1 on tokens, 0 on padding."""
    width = max(len(r) for r in rows)
    src = torch.full((len(rows), width), pad_id, dtype=torch.long)
    seg = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        src[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        seg[i, : len(row)] = 1
    return src, seg


def _device(model: Model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sentence_features(model: Model, rows: Sequence[Sequence[int]], *, pad_id: int, pooling: str = "first",
                      batch_size: int = 64) -> torch.Tensor:
    """(N, H) pooled final hidden states of ``rows`` (token ids), in float32."""
    features = []
    for start in range(0, len(rows), batch_size):
        src, seg = pad_batch(rows[start : start + batch_size], pad_id)
        src, seg = src.to(_device(model)), seg.to(_device(model))
        hidden = model.hidden_states(src, seg)  # (B, T, H)
        features.append(pool(hidden, seg > 0, pooling).float().cpu())
    return torch.cat(features)


def whiten(vectors: torch.Tensor, size: int | None) -> torch.Tensor:
    """BERT-whitening: centre, rotate and scale by the covariance's SVD so the covariance becomes the identity,
    keep the first ``size`` components, and normalise each vector to unit length. (N, H) -> (N, size)."""
    if vectors.shape[0] < 2:
        raise DataError("whitening needs at least 2 sentences (it estimates their covariance)")
    vecs = vectors.double().numpy()
    mean = vecs.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(np.cov(vecs.T))
    kernel = (u / np.sqrt(s))[:, :size]  # (H, size)
    out = (vecs - mean) @ kernel
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return torch.from_numpy(out)


@dataclass(frozen=True)
class ClozeResult:
    ids: list[int]  # the sentence with [MASK] at ``position``
    position: int
    answer_id: int
    predicted_ids: list[int]  # best first


def mask_one(ids: list[int], mask_id: int, rng: random.Random) -> tuple[list[int], int, int]:
    """Replace one random token after the first by ``mask_id`` (the original's choice: any position in
    [1, len - 1], the final [SEP] included). Returns (masked ids, position, original id)."""
    if len(ids) < 2:
        raise DataError("a cloze sentence needs at least one token besides [CLS]")
    position = rng.randint(1, len(ids) - 1)
    masked = list(ids)
    answer, masked[position] = masked[position], mask_id
    return masked, position, answer


@torch.no_grad()
def cloze_predictions(model: Model, rows: Sequence[list[int]], *, mask_id: int, pad_id: int, topn: int,
                      seed: int = 7, batch_size: int = 64) -> list[ClozeResult]:
    """For each row (token ids), mask one random position and return the model's ``topn`` predictions there."""
    rng = random.Random(seed)
    masked = [mask_one(row, mask_id, rng) for row in rows]
    results = []
    for start in range(0, len(masked), batch_size):
        chunk = masked[start : start + batch_size]
        src, seg = pad_batch([m[0] for m in chunk], pad_id)
        logits = model.logits(src.to(_device(model)), seg.to(_device(model)))  # (B, T, V)
        for i, (ids, position, answer) in enumerate(chunk):
            best = torch.topk(logits[i, position].float(), topn).indices.tolist()
            results.append(ClozeResult(ids, position, answer, best))
    return results


@torch.no_grad()
def contextual_nearest_words(model: Model, ids: list[int], position: int, candidates: Sequence[int], *,
                             topn: int, batch_size: int = 64) -> list[tuple[int, float]]:
    """(candidate id, cosine) of the ``topn`` candidates whose hidden state at ``position``, put in place of the
    token there, is closest to the sentence's own; the sentence's own token is left out."""
    device = _device(model)
    src = torch.tensor([ids], device=device)
    target = model.hidden_states(src)[0, position].float()  # (H,)
    pool_ids = [c for c in candidates if c != ids[position]]
    sims = []
    for start in range(0, len(pool_ids), batch_size):
        chunk = torch.tensor(pool_ids[start : start + batch_size], device=device)
        batch = src.repeat(len(chunk), 1)
        batch[:, position] = chunk
        hidden = model.hidden_states(batch)[:, position].float()  # (B, H)
        sims.append(F.cosine_similarity(target.unsqueeze(0), hidden, dim=-1).cpu())
    if not sims:
        return []
    scores = torch.cat(sims)
    best = torch.topk(scores, min(topn, len(pool_ids)))
    return [(pool_ids[i], v) for i, v in zip(best.indices.tolist(), best.values.tolist())]


def piece_id(tokenizer: Tokenizer, piece: str, *, where: str) -> int:
    """The id of vocabulary entry ``piece``; a piece the vocabulary lacks is a DataError naming ``where``."""
    token_id = tokenizer.piece_to_id(piece)
    if tokenizer.id_to_piece(token_id) != piece:
        raise DataError(f"{where}: {piece!r} is not in the vocabulary")
    return token_id


def format_cloze(tokenizer: Tokenizer, results: Sequence[ClozeResult]) -> str:
    """The original's cloze report: the masked sentence's pieces joined, the predictions, the answer, a blank line."""
    blocks = []
    for r in results:
        sentence = "".join(tokenizer.id_to_piece(i) for i in r.ids)
        predicted = " ".join(tokenizer.id_to_piece(i) for i in r.predicted_ids)
        answer = tokenizer.id_to_piece(r.answer_id)
        blocks.append(f"{sentence}\nPredicted answer: {predicted}\nCorrect answer: {answer}\n\n")
    return "".join(blocks)


def known_ids(tokenizer: Tokenizer, pieces: Sequence[str]) -> list[int]:
    """The ids of those ``pieces`` that are vocabulary entries, in order (the others are left out)."""
    ids = [tokenizer.piece_to_id(p) for p in pieces]
    return [i for i, p in zip(ids, pieces) if tokenizer.id_to_piece(i) == p]


def nearest_words_report(tokenizer: Tokenizer, table: torch.Tensor, lines: Iterable[tuple[int, str]], *,
                         topn: int, source: str) -> str:
    """topn_words_indep's output: per word (first field of each numbered line), ``Target word: w``, then
    ``piece<TAB>cosine`` lines, then a blank line."""
    report = []
    for number, line in lines:
        word = line.split()[0]
        word_id = piece_id(tokenizer, word, where=f"{source}:{number}")
        report.append(f"Target word: {word}\n")
        report += [f"{tokenizer.id_to_piece(i)}\t{sim}\n" for i, sim in nearest_words(table, word_id, topn)]
        report.append("\n")
    return "".join(report)


def contextual_nearest_report(model: Model, tokenizer: Tokenizer, lines: Iterable[tuple[int, str]],
                              candidates: Sequence[int], config: ContextualSearch) -> str:
    """topn_words_dep's output: per ``word<TAB>sentence`` line, the sentence, the word, then ``piece<TAB>cosine``
    lines (or a note that the word is not among the sentence's tokens). Malformed lines are skipped, logged."""
    report = []
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != 2:
            logger.warning("%s:%d: not 'word<TAB>sentence', skipped", config.source, number)
            continue
        word, context = fields
        report.append(f"Original sentence: {context}\nTarget word: {word}\n")
        ids = tokenizer.encode(context)[: config.seq_length]
        word_id = piece_id(tokenizer, word, where=f"{config.source}:{number}")
        if word_id not in ids:
            report.append("The target word is not in the sentence.\n")
            continue
        found = contextual_nearest_words(model, ids, ids.index(word_id), candidates, topn=config.topn,
                                         batch_size=config.batch_size)
        report += [f"{tokenizer.id_to_piece(i)}\t{sim}\n" for i, sim in found]
    return "".join(report)
