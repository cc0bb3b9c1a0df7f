"""Moving a checkpoint to another vocabulary file (the original's ``scripts/dynamic_vocab_adapter.py``) and
comparing two vocabulary files (``scripts/diff_vocab.py``).

Adapting keeps every tensor but the vocabulary rows (word embeddings, LM/MLM output rows and biases: the keys
``vocab_row_keys()`` names). Row ``i`` of the new tensors is the old row of the same token when the old vocabulary
has it, else a fresh N(0, 0.02) draw (zeros for a bias), so a word keeps its vector under its new id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tencentpretrain.checkpoint import load_state_dict, save_checkpoint
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.tokenizers.base import require_file
from tencentpretrain.tokenizers.vocab import load_vocab
from tencentpretrain.vocab.resize import vocab_row_keys

logger = logging.getLogger(__name__)

INIT_STD = 0.02  # the original's N(0, 0.02) for rows of new tokens


@dataclass(frozen=True)
class RowMapping:
    """Where each row of the new vocabulary comes from: ``old_ids[i]`` is the old id of new token ``i``, or -1."""

    old_ids: tuple[int, ...]
    old_size: int

    @property
    def kept(self) -> int:
        return sum(1 for i in self.old_ids if i >= 0)


def map_vocabularies(old_tokens: list[str], new_tokens: list[str]) -> RowMapping:
    """The row of each new token in the old vocabulary (its first occurrence), -1 for new tokens."""
    first_row: dict[str, int] = {}
    for i, token in enumerate(old_tokens):
        first_row.setdefault(token, i)
    return RowMapping(tuple(first_row.get(token, -1) for token in new_tokens), len(old_tokens))


def remap_rows(tensor: torch.Tensor, mapping: RowMapping, *, key: str, generator: torch.Generator) -> torch.Tensor:
    """(V_old, ...) -> (V_new, ...): kept rows copied from their old ids, new rows drawn (biases: zero)."""
    if tensor.shape[0] < mapping.old_size:
        raise CheckpointError(f"{key} has {tensor.shape[0]} rows but the old vocabulary has {mapping.old_size} "
                              "tokens: --old_vocab_path is not this checkpoint's vocabulary")
    fresh = torch.randn((len(mapping.old_ids), *tensor.shape[1:]), generator=generator, dtype=torch.float32)
    out = (fresh * INIT_STD if tensor.dim() > 1 else torch.zeros_like(fresh)).to(tensor.dtype)
    index = torch.tensor(mapping.old_ids, dtype=torch.long)
    kept = index >= 0
    out[kept] = tensor[index[kept]]
    return out


def adapt_state_dict(state: Mapping[str, torch.Tensor], mapping: RowMapping, *,
                     seed: int = 7) -> dict[str, torch.Tensor]:
    """A copy of ``state`` whose vocabulary rows follow ``mapping``; other tensors are shared, unchanged."""
    keys = [k for k in vocab_row_keys() if k in state]
    if not keys:
        raise CheckpointError(f"the checkpoint has none of the vocabulary tensors {vocab_row_keys()}")
    adapted = dict(state)
    for key in keys:
        # The same draws for every key, so a head tied to the embedding stays equal to it.
        generator = torch.Generator().manual_seed(seed)
        adapted[key] = remap_rows(state[key], mapping, key=key, generator=generator)
    return adapted


def adapt_checkpoint(old_model_path: str, old_vocab_path: str, new_vocab_path: str, new_model_path: str, *,
                     seed: int = 7) -> RowMapping:
    """Write ``old_model_path`` re-indexed from the old vocabulary file to the new one at ``new_model_path``
    (atomically; the format follows the suffix)."""
    old_tokens = load_vocab(require_file(old_vocab_path, "--old_vocab_path", "old vocabulary file"))
    new_tokens = load_vocab(require_file(new_vocab_path, "--new_vocab_path", "new vocabulary file"))
    mapping = map_vocabularies(old_tokens, new_tokens)
    state = load_state_dict(old_model_path)
    adapted = adapt_state_dict(state, mapping, seed=seed)
    save_checkpoint(adapted, new_model_path)
    logger.info("%s: %d of %d tokens kept their rows, %d new", new_model_path, mapping.kept, len(mapping.old_ids),
                len(mapping.old_ids) - mapping.kept)
    return mapping


def vocabulary_set(path: str) -> set[str]:
    """The tokens of a vocabulary file (first field of each non-blank line)."""
    try:
        with open(path, encoding="utf-8") as f:
            return {line.split()[0] for line in f if line.strip()}
    except FileNotFoundError:
        raise ConfigError(f"{path}: vocabulary file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text vocabulary ({e.reason} at byte {e.start})") from None


def diff_vocabularies(path_1: str, path_2: str) -> str:
    """The original's diff_vocab report: each size, then the sizes of the two differences and the intersection."""
    vocab_1, vocab_2 = vocabulary_set(path_1), vocabulary_set(path_2)
    return (
        f"vocab_1: {path_1}, size: {len(vocab_1)}\n"
        f"vocab_2: {path_2}, size: {len(vocab_2)}\n"
        f"vocab_1 - vocab_2 = {len(vocab_1 - vocab_2)}\n"
        f"vocab_2 - vocab_1 = {len(vocab_2 - vocab_1)}\n"
        f"vocab_1 & vocab_2 = {len(vocab_1 & vocab_2)}\n"
    )
