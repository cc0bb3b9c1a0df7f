"""Training only part of a model after a vocabulary extension, as a transform on a built model.

Two stages are common after ``scripts/resize_vocab.py``:

* ``"embeddings"``: train the word embedding and the LM head (all their rows), freeze everything else;
* ``"new_rows"``: train only the rows of the new pieces (ids >= ``original_vocab_size``) of those two tables.

For ``new_rows`` a gradient hook zeroes the gradient of the old rows, so gradient norms and clipping see only new
rows and Adam's moments of old rows stay zero. That is not enough on its own: decoupled weight decay (AdamW)
shrinks every row of a parameter whatever its gradient, and optimizer state restored from an earlier run still
moves old rows. So the old rows are also copied once and written back after every optimizer step
(``attach_optimizer`` registers that as a step post-hook; with an optimizer wrapper that has no such hooks, call
``restore_frozen_rows()`` after each step). Old rows therefore stay bit-identical.

Typical use (pretrain.py)::

    freeze = freeze_for_vocab_extension(model, "new_rows", original_vocab_size)
    optimizer = build_optimizer(p for p in model.parameters() if p.requires_grad)
    freeze.attach_optimizer(optimizer)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from tencentpretrain.errors import ConfigError

logger = logging.getLogger(__name__)

FreezeMode = Literal["embeddings", "new_rows"]
FREEZE_MODES: tuple[str, ...] = ("embeddings", "new_rows")


@dataclass
class VocabExtensionFreeze:
    """Handle of an applied freeze: which parameters train, and the hooks that keep old rows fixed."""

    mode: str
    original_vocab_size: int
    trainable: list[str]
    _params: list[nn.Parameter] = field(default_factory=list, repr=False)
    _frozen_rows: list[torch.Tensor] = field(default_factory=list, repr=False)
    _handles: list = field(default_factory=list, repr=False)

    @torch.no_grad()
    def restore_frozen_rows(self) -> None:
        """Write the saved old rows back (``new_rows`` mode; a no-op for ``embeddings``)."""
        for i, (param, rows) in enumerate(zip(self._params, self._frozen_rows, strict=True)):
            if rows.device != param.device or rows.dtype != param.dtype:  # the model moved after the freeze
                rows = self._frozen_rows[i] = rows.to(param.device, param.dtype)  # once, not at every step
            param[: rows.shape[0]].copy_(rows)

    @property
    def protected_params(self) -> list[nn.Parameter]:
        """The parameters whose old rows are kept (``new_rows``). An optimizer whose master weights live
        elsewhere (DeepSpeed) should not decay them: with zero gradients and no decay, Adam leaves rows as they are."""
        return list(self._params)

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Restore the old rows after every ``optimizer.step()`` (undoing weight decay and stale moments)."""
        if self.mode != "new_rows":
            return
        if not hasattr(optimizer, "register_step_post_hook"):
            raise ConfigError(
                f"{type(optimizer).__name__} has no register_step_post_hook: call restore_frozen_rows() after "
                "each optimizer step instead"
            )
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self.restore_frozen_rows()))

    def remove(self) -> None:
        """Remove the hooks; ``requires_grad`` flags are left as they are."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def freeze_for_vocab_extension(model: nn.Module, mode: FreezeMode, original_vocab_size: int) -> VocabExtensionFreeze:
    """Freeze all but the vocabulary tables (``embeddings``) or all but their new rows (``new_rows``).

    The vocabulary tables are the parameters the model's components declare as ``vocabulary_rows``
    (``Model.vocabulary_parameters()``): the word embedding and the LM head, whatever they are registered as.

    Args:
        model: a built Model (or a DDP-style wrapper with ``.module``).
        mode: "embeddings" or "new_rows".
        original_vocab_size: rows that belong to the base vocabulary (``read_extension_record(path)``).
    """
    if mode not in FREEZE_MODES:
        raise ConfigError(f"train_only {mode!r} is not one of {', '.join(FREEZE_MODES)}")
    module = getattr(model, "module", model)
    vocab = module.vocabulary_parameters()  # tied weights appear once
    word_key = module.word_embedding_key()
    if word_key not in vocab:
        raise ConfigError(f"the model (embedding {list(module.config.embedding)}) has no word embedding to train")
    rows = vocab[word_key].shape[0]
    if not 0 < original_vocab_size < rows:
        raise ConfigError(
            f"original_vocab_size={original_vocab_size} must be between 1 and the model's {rows - 1}: "
            "the model has no new rows to train (was the checkpoint resized with scripts/resize_vocab.py?)"
        )
    for param in module.parameters():
        param.requires_grad_(False)
    for param in vocab.values():
        param.requires_grad_(True)
    freeze = VocabExtensionFreeze(mode=mode, original_vocab_size=original_vocab_size, trainable=sorted(vocab))
    if mode == "new_rows":
        _protect_old_rows(freeze, list(vocab.values()), original_vocab_size)
    logger.info(
        "training only %s%s", ", ".join(freeze.trainable),
        f" rows >= {original_vocab_size}" if mode == "new_rows" else "",
    )
    return freeze


def _protect_old_rows(freeze: VocabExtensionFreeze, params: list[nn.Parameter], original_vocab_size: int) -> None:
    """Mask the old rows' gradients and keep a copy of the old rows to restore after each step."""
    for param in params:
        freeze._params.append(param)
        freeze._frozen_rows.append(param.detach()[:original_vocab_size].clone())
        freeze._handles.append(param.register_hook(_old_rows_zeroed(original_vocab_size)))


def _old_rows_zeroed(original_vocab_size: int):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:original_vocab_size] = 0
        return grad

    return hook


def resolve_original_vocab_size(original_vocab_size: int | None, pretrained_model_path: str | None) -> int:
    """``--original_vocab_size`` when given, else the value recorded by resize_vocab next to the checkpoint."""
    if original_vocab_size is not None:
        return original_vocab_size
    if not pretrained_model_path:
        raise ConfigError("--train_only needs --original_vocab_size or a --pretrained_model_path written by "
                          "scripts/resize_vocab.py")
    from tencentpretrain.vocab.resize import read_extension_record

    return read_extension_record(pretrained_model_path)["original_vocab_size"]
