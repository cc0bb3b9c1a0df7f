"""The model a task fine-tunes: the pretrained embedding and encoder under the original's keys, plus a head.

``TaskModel`` holds ``embedding`` and ``encoder`` exactly as the pretraining ``Model`` does, so their state keys
(``embedding.word.embedding.weight``, ``encoder.transformer.0...``) are those of a pretrained checkpoint and of a
model fine-tuned by the original; a task adds its head under the original's names (``output_layer_1``, ...).
A task model never holds the pretraining targets.
"""

from __future__ import annotations

import logging
import re
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.checkpoint import StateDict, load_state_dict, load_state_into
from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.loading import iter_pretrained_state
from tencentpretrain.encoders.transformer import TransformerEncoder
from tencentpretrain.errors import CheckpointError, DataError
from tencentpretrain.layers.dropout import torch_dropout_in_use
from tencentpretrain.models.model import Embedding, init_module_
from tencentpretrain.registry import ENCODERS

logger = logging.getLogger(__name__)

BACKBONE_PREFIXES = ("embedding.", "encoder.")
# Keys the original's modules did not have and whose zero value computes what the original computed: its patch
# embedding (ViT) had no projection bias. A checkpoint of the original lacks them; they are loaded as zeros.
ZERO_WHEN_ABSENT = ("embedding.patch.projection.bias",)
# Since its encoder refactor (Nov 2023) the original's encoder layers apply one relative position bias that they
# share, saved under every layer, while its ``encoder.relative_pos_emb`` is built but never used.
LAYER_RELATIVE_BIAS = re.compile(r"^encoder\.transformer\.(\d+\.)?relative_pos_emb\.relative_attention_bias\.weight$")
ENCODER_RELATIVE_BIAS = "encoder.relative_pos_emb.relative_attention_bias.weight"
_LIST_LIMIT = 8


class TaskOutput(NamedTuple):
    """What a task model's forward returns: the loss (None without labels) and its predictions' logits."""

    loss: torch.Tensor | None
    logits: torch.Tensor


class TaskModel(nn.Module):
    """Embedding + encoder of ``config``; subclasses add the task head and ``forward(batch) -> TaskOutput``."""

    # False where the head reads real positions only: the transformer encoder then skips the padding's work
    # (layers.packing) and returns zeros there, unless dropout draws torch's masks (the original's shapes).
    head_reads_padding = True
    # --original_dropout: training pads every batch to this width (--seq_length), as the original padded its
    # batches, so that torch draws dropout masks of the original's shapes in the original's order.
    original_mask_width: int | None = None

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.embedding = Embedding(config, vocab_size, config.embedding)
        self.encoder = ENCODERS.get(config.encoder)(config)

    def encode(self, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, H) of ``src`` (B, T); ``seg`` (B, T) holds segment ids, 0 = padding. Padding
        never changes a real token's state, so a batch padded to its longest input equals one padded further."""
        width = seg.shape[1]
        if (self.training and self.original_mask_width is not None and src.dim() == 2
                and width < self.original_mask_width):  # token ids (not images)
            padding = (0, self.original_mask_width - width)
            src, seg = F.pad(src, padding), F.pad(seg, padding)  # seg 0: padding, hidden from every real token
        positions = self.embedding.default_positions(src)
        limit = self.config.max_seq_length if "pos" in self.config.embedding else None
        if limit is not None and positions.shape[1] > limit:
            raise DataError(f"an input of {positions.shape[1]} tokens is longer than the model's {limit} learned "
                            f"positions (max_seq_length of the config): pass --seq_length {limit} or less")
        emb = self.embedding(src, seg, positions)
        skip = {"skip_padding": True} if self._skips_padding() else {}
        return self.encoder(emb, seg, positions=positions, honor_padding=True, **skip)[:, :width]

    def _skips_padding(self) -> bool:
        return (not self.head_reads_padding and isinstance(self.encoder, TransformerEncoder)
                and not (self.training and torch_dropout_in_use()))

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise everything for training from scratch (no --pretrained_model_path)."""
        for name, module in self.named_modules():
            init_module_(name, module)


def load_pretrained_weights(model: TaskModel, path: str) -> None:
    """Initialise ``model`` from a pretrained (or fine-tuned) checkpoint, as the original did, but checked.

    The backbone (every ``embedding.*`` / ``encoder.*`` key) must be in the checkpoint with the right shapes; a
    head key found there is loaded too (fine-tuning a fine-tuned model), else the head keeps its fresh
    initialisation. The checkpoint's other keys (the pretraining targets) are logged and not used. A task model
    whose head reuses pretrained weights under other names renames them in ``adapt_pretrained_state(state)``.
    """
    state: StateDict = {}
    for _, shard in iter_pretrained_state(path, model.config):
        state.update(shard)
    if hasattr(model, "adapt_pretrained_state"):  # a head stored under other names (e.g. target.mlm.*)
        state = model.adapt_pretrained_state(state)
    expected = model.state_dict()
    _adapt_original_layout(expected, state, path)
    missing_backbone = [k for k in expected if k.startswith(BACKBONE_PREFIXES) and k not in state]
    if missing_backbone:
        raise CheckpointError(
            f"{path}: the pretrained model lacks {len(missing_backbone)} weight(s) of the encoder this config "
            f"builds ({_listing(missing_backbone)}); check that --config_path describes the pretrained model")
    unused = sorted(k for k in state if k not in expected)
    fresh = sorted(k for k in expected if k not in state)
    if unused:
        logger.info("%s: not used by the task model: %s", path, _listing(unused))
    if fresh:
        logger.info("newly initialised (not in %s): %s", path, _listing(fresh))
    load_state_into(model, {k: v for k, v in state.items() if k in expected}, source=path,
                    allow_missing=tuple(fresh))


def load_finetuned_weights(model: TaskModel, path: str) -> None:
    """Load a fine-tuned model (ours or the original's) strictly: exactly the keys and shapes of ``model``
    (a key of ``ZERO_WHEN_ABSENT`` that an original checkpoint lacks is zero)."""
    state = load_state_dict(path)
    _adapt_original_layout(model.state_dict(), state, path)
    load_state_into(model, state, source=path)


def _adapt_original_layout(expected: StateDict, state: StateDict, path: str) -> None:
    """Rewrite (in place) what the original saved differently from what it computed with: the layers' shared
    relative position bias becomes ``encoder.relative_pos_emb``; absent ``ZERO_WHEN_ABSENT`` keys are zeros."""
    layer_keys = [k for k in state if LAYER_RELATIVE_BIAS.match(k)]
    if layer_keys and ENCODER_RELATIVE_BIAS in expected:
        shared = state[layer_keys[0]]
        if any(not torch.equal(state[k], shared) for k in layer_keys[1:]):
            raise CheckpointError(f"{path}: the encoder layers' relative position biases differ; the original "
                                  "shares one between all layers")
        for key in layer_keys:
            del state[key]
        logger.info("%s: the relative position bias the encoder layers share is loaded as %s (the original "
                    "computed with the layers' copy and left that key unused)", path, ENCODER_RELATIVE_BIAS)
        state[ENCODER_RELATIVE_BIAS] = shared
    for key in ZERO_WHEN_ABSENT:
        if key in expected and key not in state:
            logger.info("%s: no %s (the original's layout); it is zero", path, key)
            state[key] = torch.zeros_like(expected[key])


def build_task_model(model_class: type[TaskModel], config: ModelConfig, vocab_size: int,
                     pretrained_model_path: str | None, **head_args) -> TaskModel:
    """A task model with the original's initialisation: the pretrained weights where given (the head keeps
    PyTorch's default initialisation, as in the original), else everything initialised from scratch."""
    model = model_class(config, vocab_size, **head_args)
    if pretrained_model_path:
        load_pretrained_weights(model, pretrained_model_path)
    else:
        model.init_weights()
    return model


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f" ... and {len(keys) - _LIST_LIMIT} more" if len(keys) > _LIST_LIMIT else "")

