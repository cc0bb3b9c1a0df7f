"""Vocabulary-size agreement between a tokenizer, a checkpoint's embedding rows and a config.

The classic conversion failure is a model exported with the wrong tokenizer (Meta's 32000-piece model next to
a 49953-row Chinese LLaMA); it loads, then produces garbage. Every converter that sees more than one of the
three numbers calls ``check_vocab_sizes``, whose error states all three.
"""

from __future__ import annotations

import logging

from tencentpretrain.errors import CheckpointError

logger = logging.getLogger(__name__)

# The word embedding of the LLaMA weight maps (convert/hf.py). Code that serves any model asks
# ``models.capabilities.word_embedding_key(config)`` instead.
EMBEDDING_KEY = "embedding.word.embedding.weight"


def check_vocab_sizes(
    *,
    tokenizer: int | None,
    embedding: int,
    config: int | None,
    source: str,
    allow_padding: bool = False,
) -> None:
    """Raise CheckpointError unless the known sizes agree.

    Args:
        tokenizer: pieces of the tokenizer (None when no tokenizer is involved).
        embedding: rows of the word embedding in the checkpoint.
        config: ``vocab_size`` of the config (None when the config leaves it to the tokenizer).
        allow_padding: accept a tokenizer smaller than the embedding (a table padded for speed, or extra
            tokens outside the SentencePiece model); a larger tokenizer is always an error, since its ids
            would index past the table.
    """
    numbers = f"tokenizer {_show(tokenizer)} pieces, embedding {embedding} rows, config vocab_size {_show(config)}"
    if config is not None and config != embedding:
        raise CheckpointError(f"{source}: vocabulary sizes disagree ({numbers}): the config does not describe "
                              "this checkpoint; fix vocab_size in the config")
    if tokenizer is None or tokenizer == embedding:
        return
    if tokenizer > embedding:
        raise CheckpointError(f"{source}: vocabulary sizes disagree ({numbers}): the tokenizer has ids the model "
                              "has no rows for; use the tokenizer the model was trained with")
    if not allow_padding:
        raise CheckpointError(
            f"{source}: vocabulary sizes disagree ({numbers}): is this the tokenizer the model was trained "
            "with? If the embedding is padded on purpose, pass --allow_vocab_padding"
        )
    logger.warning("%s: embedding padded beyond the tokenizer (%s)", source, numbers)


def _show(value: int | None) -> str:
    return "?" if value is None else str(value)
