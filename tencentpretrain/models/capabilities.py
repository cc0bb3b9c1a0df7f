"""What the registered components declare about themselves, read from a config without building a model.

Weight tying, vocabulary resize and freezing, the checkpoint's vocabulary hint and the converters ask these
functions, never for the literal names ``word``, ``lm`` or ``mlm``, so a component registered under another name
keeps every behaviour its declarations give it. The declarations are class attributes:

* an embedding: ``word_weight`` (it is a word embedding; the name of its (V, E) table, which heads tie to) and
  ``vocabulary_rows`` (its parameters whose first dimension is the vocabulary);
* a target: ``vocabulary_rows``, ``ties_to_word_embedding``, ``labels`` and ``reads_earlier_targets``
  (``tencentpretrain.targets.output`` says what each means).

Keys are state_dict keys: ``{side}.{component name}.{parameter}``, e.g. ``embedding.word.embedding.weight``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tencentpretrain.config import ModelConfig
from tencentpretrain.registry import EMBEDDINGS, TARGETS

SOURCE_SIDE = "embedding"
TARGET_SIDE = "tgt_embedding"


def word_embedding_name(names: Sequence[str]) -> str | None:
    """The first of the embeddings ``names`` that declares itself a word embedding, or None."""
    for name in names:
        if getattr(EMBEDDINGS.get(name), "word_weight", None):
            return name
    return None


def word_embedding_key(config: ModelConfig, side: str = SOURCE_SIDE) -> str | None:
    """The state key of the word-embedding table on ``side`` ("embedding", or "tgt_embedding" with a decoder),
    or None when that side has no word embedding."""
    if side == TARGET_SIDE and config.decoder is None:
        return None
    name = word_embedding_name(config.embedding if side == SOURCE_SIDE else config.tgt_embedding)
    return None if name is None else f"{side}.{name}.{EMBEDDINGS.get(name).word_weight}"


def tied_keys(config: ModelConfig) -> dict[str, str]:
    """{key: the key whose tensor it is}, in the order the ties are made (a key may point at a tied key).

    ``share_embedding`` makes the decoder's word embedding the encoder's. ``tie_weights`` makes every parameter a
    target lists in ``ties_to_word_embedding`` the word embedding of the side its hidden states come from: the
    decoder's when there is one, else the encoder's (TencentPretrain's rules).
    """
    ties: dict[str, str] = {}
    source = word_embedding_key(config, SOURCE_SIDE)
    target_side = word_embedding_key(config, TARGET_SIDE)
    if config.share_embedding and source and target_side:
        ties[target_side] = source
    words = target_side if config.decoder is not None else source
    if config.tie_weights and words:
        for name in config.target:
            for param in getattr(TARGETS.get(name), "ties_to_word_embedding", ()):
                ties[f"target.{name}.{param}"] = words
    return ties


def vocabulary_keys(config: ModelConfig) -> list[str]:
    """State keys of a model built from ``config`` whose first dimension is the vocabulary, embeddings first.

    Optional parameters a component declares (an output bias) are listed whether or not the config has them;
    look them up with ``in``.
    """
    keys = []
    sides = [(SOURCE_SIDE, config.embedding)]
    if config.decoder is not None:
        sides.append((TARGET_SIDE, config.tgt_embedding))
    for side, names in sides:
        keys += [f"{side}.{name}.{p}" for name in names for p in getattr(EMBEDDINGS.get(name), "vocabulary_rows", ())]
    keys += [f"target.{name}.{p}" for name in config.target for p in getattr(TARGETS.get(name), "vocabulary_rows", ())]
    return keys


def registered_vocabulary_keys() -> list[str]:
    """Every state key that any registered component could give vocabulary rows, for tools that see a
    checkpoint without its config (``scripts/resize_vocab.py`` on a bare directory)."""
    keys = []
    for side in (SOURCE_SIDE, TARGET_SIDE):
        for name in EMBEDDINGS.names():
            keys += [f"{side}.{name}.{p}" for p in getattr(EMBEDDINGS.get(name), "vocabulary_rows", ())]
    for name in TARGETS.names():
        keys += [f"target.{name}.{p}" for p in getattr(TARGETS.get(name), "vocabulary_rows", ())]
    return keys


def produces_vocabulary_logits(target_name: str) -> bool:
    """Whether the registered target projects hidden states to vocabulary logits (it has vocabulary rows)."""
    return bool(getattr(TARGETS.get(target_name), "vocabulary_rows", ()))


def label_kind(target_name: str) -> str | None:
    """The kind of labels the registered target scores (``targets.output.LABELS_*``), None for none."""
    return getattr(TARGETS.get(target_name), "labels", None)
