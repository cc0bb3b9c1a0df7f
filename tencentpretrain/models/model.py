"""The composite Model and ``build_model``: components are looked up by name in the registries.

Child modules are attached with ``add_module(name, ...)`` so that state_dict keys are TencentPretrain's:
``embedding.word.embedding.weight``, ``encoder.transformer.0.self_attn.linear_layers.0.weight``,
``target.lm.output_layer.weight``. Nothing here touches a device; parallelism, LoRA, quantization and
activation checkpointing are transforms applied to a built model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.embeddings.stack import Embedding
from tencentpretrain.errors import ConfigError
from tencentpretrain.layers.kv_cache import KVCache
from tencentpretrain.models.capabilities import (
    produces_vocabulary_logits,
    tied_keys,
    vocabulary_keys,
    word_embedding_key,
)
from tencentpretrain.registry import DECODERS, ENCODERS, TARGETS
from tencentpretrain.targets.output import EarlierTarget, TargetOutput

INIT_STD = 0.02
DEEP_INIT_SUFFIXES = ("final_linear", "feed_forward.linear_2")  # projections back into the residual stream


def two_stream_mismatch(target: str, config: ModelConfig) -> str:
    if config.is_dual:
        return (f"target {target!r} reads one stream, but this is a two-stream (dual) model: pretrain it with "
                f"target clr, or fine-tune it with finetune/run_classifier_siamese.py")
    return f"target {target!r} compares two streams: it needs embedding ['dual'] and encoder 'dual'"


def real_tokens(seg: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """seg > 0 (of each stream for a dual model's pair)."""
    return tuple(s > 0 for s in seg) if isinstance(seg, tuple) else seg > 0


class Target(nn.Module):
    """The named training objectives, computed in the config's order; with several, their losses add up and
    metrics are merged. A target that declares ``reads_earlier_targets`` also gets the ones before it."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.names = config.target
        for name in config.target:
            target = TARGETS.get(name)
            if getattr(target, "reads_two_streams", False) != config.is_dual:
                raise ConfigError(two_stream_mismatch(name, config))
            self.add_module(name, target(config, vocab_size))

    def forward(
        self, hidden: torch.Tensor, tgt: torch.Tensor | dict[str, torch.Tensor], loss_mask: torch.Tensor
    ) -> TargetOutput:
        """tgt: one tensor all targets read, or {target name: its labels} (a target without labels is absent)."""
        earlier: dict[str, EarlierTarget] = {}
        for name in self.names:
            module = getattr(self, name)
            labels = tgt.get(name) if isinstance(tgt, dict) else tgt
            if labels is None and getattr(module, "labels", None) is not None:
                raise ConfigError(f"the batch has no labels for target {name!r} (it has labels for {sorted(tgt)})")
            extra = {"earlier": dict(earlier)} if getattr(module, "reads_earlier_targets", False) else {}
            earlier[name] = EarlierTarget(module, module(hidden, labels, loss_mask, **extra), hidden, loss_mask)
        outputs = [e.output for e in earlier.values()]
        if len(outputs) == 1:
            return outputs[0]
        metrics = {k: v for out in outputs for k, v in out.metrics.items()}
        return TargetOutput(sum(out.loss for out in outputs), metrics)

    def vocabulary_target(self) -> str:
        """The name of the first target that produces vocabulary logits (declares ``vocabulary_rows``)."""
        for name in self.names:
            if produces_vocabulary_logits(name):
                return name
        raise ConfigError(f"none of the targets {list(self.names)} produces vocabulary logits")

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's output logits of ``hidden`` (..., H): vocabulary logits (..., V) from
        ``vocabulary_target()``; for a model without one, the class logits (B, C) of its first classifier."""
        names = [n for n in self.names if produces_vocabulary_logits(n)]
        names += [n for n in self.names if hasattr(getattr(self, n), "logits")]
        if not names:
            raise ConfigError(f"none of the targets {list(self.names)} produces logits")
        return getattr(self, names[0]).logits(hidden)


class Model(nn.Module):
    """embedding -> encoder [-> tgt_embedding + decoder] -> target, built from a ModelConfig."""

    def __init__(self, config: ModelConfig, vocab_size: int, tgt_vocab_size: int | None = None) -> None:
        """``tgt_vocab_size``: rows of the decoder's embeddings and of the targets when the decoder side has a
        vocabulary of its own (``mt`` data built with ``--tgt_vocab_path``, as the original built the model);
        default ``vocab_size``."""
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.tgt_vocab_size = vocab_size if tgt_vocab_size is None else tgt_vocab_size
        _check_target_vocabulary(config, vocab_size, self.tgt_vocab_size)
        self.embedding = Embedding(config, vocab_size, config.embedding)
        self.encoder = ENCODERS.get(config.encoder)(config)
        if config.decoder is not None:  # encoder-decoder: the target reads the decoder's output
            self.tgt_embedding = Embedding(config, self.tgt_vocab_size, config.tgt_embedding)
            self.decoder = DECODERS.get(config.decoder)(config)
        self.target = Target(config, self.tgt_vocab_size)
        self.tie_parameters()

    # ------------------------------------------------------------------ capabilities
    def tie_parameters(self) -> None:
        """Make each tied parameter the very tensor it is tied to (``tied_parameters()``); called after
        building, initialising and loading on the meta device, which replace parameters."""
        for key, source in self.tied_parameters().items():
            owner, _, attr = key.rpartition(".")
            setattr(self.get_submodule(owner), attr, self.get_parameter(source))

    def tied_parameters(self) -> dict[str, str]:
        """{state key: the state key it is the same tensor as}, from what the components declare
        (``capabilities.tied_keys``), e.g. {"target.lm.output_layer.weight": "embedding.word.embedding.weight"}."""
        return tied_keys(self.config)

    def vocabulary_keys(self) -> list[str]:
        """State keys of this model whose first dimension is the vocabulary, embeddings first."""
        state_keys = set(self.state_dict(keep_vars=True))
        return [k for k in vocabulary_keys(self.config) if k in state_keys]

    def vocabulary_parameters(self) -> dict[str, nn.Parameter]:
        """{name: parameter} of the vocabulary tables, each tensor once (a tied head is its embedding's entry)."""
        named = dict(self.named_parameters())  # tied parameters appear once, under their first name
        return {k: named[k] for k in self.vocabulary_keys() if k in named}

    def word_embedding_key(self, side: str = "embedding") -> str | None:
        """State key of the word-embedding table on ``side`` ("embedding" or "tgt_embedding"), or None."""
        return word_embedding_key(self.config, side)

    # ------------------------------------------------------------------ training
    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor | dict[str, torch.Tensor],
        seg: torch.Tensor,
        loss_mask: torch.Tensor | None = None,
        *,
        tgt_in: torch.Tensor | None = None,
        tgt_seg: torch.Tensor | None = None,
    ) -> TargetOutput:
        """Training forward.

        Args:
            src: (B, T) input ids (images (B, C, H, W) with the ``patch`` embedding); a dual model takes pairs
                (stream 0, stream 1) of src and seg.
            tgt: (B, T) target ids (next tokens for ``lm``, original tokens for ``mlm``), (B,) labels for
                ``sp``/``cls``, or a dict {target name: tensor} with several targets.
            seg: (B, T) segment ids, 0 = padding.
            loss_mask: (B, T) bool, positions whose target is scored (the masked ones for ``mlm``);
                default ``seg > 0`` (``tgt_seg > 0`` with a decoder).
            tgt_in, tgt_seg: (B, T') decoder input ids and segment ids (encoder-decoder models only).
        """
        hidden, seg = self.target_inputs(src, seg, tgt_in=tgt_in, tgt_seg=tgt_seg, honor_padding=False)
        return self.target(hidden, tgt, real_tokens(seg) if loss_mask is None else loss_mask)

    def target_inputs(
        self,
        src: torch.Tensor,
        seg: torch.Tensor,
        *,
        tgt_in: torch.Tensor | None = None,
        tgt_seg: torch.Tensor | None = None,
        honor_padding: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the targets read: the final hidden states (B, T, H) and the segment ids (B, T) of their
        positions; with a decoder, the decoder's (B, T', H) of ``tgt_in`` and ``tgt_seg``.

        Training passes ``honor_padding=False`` (padding keys are not masked, as the original trained);
        evaluation keeps the default, so padded positions never change a real token's hidden state.
        """
        positions = self.embedding.default_positions(src)
        emb = self.embedding(src, seg, positions)
        hidden = self.encoder(emb, seg, positions=positions, honor_padding=honor_padding)
        if self.config.decoder is None:
            return hidden, seg
        if tgt_in is None:
            raise ConfigError(f"decoder {self.config.decoder!r}: forward needs tgt_in (decoder input ids)")
        tgt_seg = torch.ones_like(tgt_in) if tgt_seg is None else tgt_seg
        return self.decode(hidden, seg, tgt_in, tgt_seg), tgt_seg

    def decode(
        self,
        memory: torch.Tensor,
        src_seg: torch.Tensor,
        tgt_in: torch.Tensor,
        tgt_seg: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Decoder hidden states (B, T', H) of ``tgt_in`` (B, T') against the encoder output ``memory``
        (B, S, H); ``cache`` (from ``new_decoder_kv_cache``) makes decoding incremental."""
        if tgt_seg is None:
            tgt_seg = torch.ones_like(tgt_in)
        positions = self.tgt_embedding.default_positions(tgt_in, start=cache.length if cache is not None else 0)
        emb = self.tgt_embedding(tgt_in, tgt_seg, positions)
        return self.decoder(memory, emb, src_seg, tgt_seg, cache=cache)

    def new_decoder_kv_cache(self, batch_size: int, max_length: int) -> KVCache:
        """An empty self-attention cache of the decoder layers, in the model's dtype and device."""
        param = next(self.parameters())
        c = self.config
        return KVCache(
            layers_num=self.decoder.layers_num, batch_size=batch_size, kv_heads_num=c.kv_heads_num,
            head_size=c.head_size, max_length=max_length, dtype=param.dtype, device=param.device,
        )

    # ------------------------------------------------------------------ inference
    def hidden_states(
        self,
        src: torch.Tensor,
        seg: torch.Tensor | None = None,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Final hidden states (B, T, H) of ``src`` (B, T), extending ``cache`` when given.

        ``seg`` marks padding with 0 (default: no padding). ``positions`` default to the cache slots
        ``cache.length + [0, T)``; left-padded batches pass their own per-row positions.
        """
        if positions is None:
            positions = self.embedding.default_positions(src, start=cache.length if cache is not None else 0)
        if seg is None:
            seg = torch.ones_like(positions)
        emb = self.embedding(src, seg, positions)
        return self.encoder(emb, seg, positions=positions, cache=cache, honor_padding=True)

    def logits(
        self,
        src: torch.Tensor,
        seg: torch.Tensor | None = None,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Vocabulary logits (B, T, V), or (B, 1, V) for the last position only with ``last_only``."""
        hidden = self.hidden_states(src, seg, positions=positions, cache=cache)
        if last_only:
            hidden = hidden[:, -1:]
        return self.target.logits(hidden)

    def new_kv_cache(
        self, batch_size: int, max_length: int, *, dtype: torch.dtype | None = None, device=None
    ) -> KVCache:
        """An empty cache for ``batch_size`` rows of up to ``max_length`` tokens, in the model's dtype/device."""
        param = next(self.parameters())
        c = self.config
        return KVCache(
            layers_num=c.layers_num,
            batch_size=batch_size,
            kv_heads_num=c.kv_heads_num,
            head_size=c.head_size,
            max_length=max_length,
            dtype=dtype or param.dtype,
            device=device or param.device,
        )

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_weights(self, std: float = INIT_STD) -> None:
        """Initialise for training from scratch: linear and embedding weights N(0, std), biases 0,
        norm gains 1 and shifts 0 (not N(0, 0.02) as the original did)."""
        for name, module in self.named_modules():
            init_module_(name, module, std=std)
        self.tie_parameters()


@torch.no_grad()
def init_module_(name: str, module: nn.Module, *, std: float = INIT_STD, deep_init_layers: int | None = None) -> None:
    """Initialise one module's own parameters for training from scratch: linear and embedding weights
    N(0, std) (scaled by 1/sqrt(2 * layers) on the residual projections under ``--deep_init``), biases 0, and
    our own modules (norms, ...) by their ``reset_parameters``."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        scale = 1.0
        if deep_init_layers and name.endswith(DEEP_INIT_SUFFIXES):
            scale = 1.0 / math.sqrt(2.0 * deep_init_layers)
        nn.init.normal_(module.weight, mean=0.0, std=std * scale)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif hasattr(module, "reset_parameters") and type(module).__module__.startswith("tencentpretrain"):
        module.reset_parameters()


def _check_target_vocabulary(config: ModelConfig, vocab_size: int, tgt_vocab_size: int) -> None:
    if tgt_vocab_size == vocab_size:
        return
    if config.decoder is None:
        raise ConfigError(f"a target vocabulary of {tgt_vocab_size} pieces (source: {vocab_size}) needs a decoder; "
                          "the config has none")
    if config.share_embedding:
        raise ConfigError(f"share_embedding ties the decoder's word embedding to the encoder's, but the source "
                          f"vocabulary has {vocab_size} pieces and the target vocabulary {tgt_vocab_size}: set "
                          "share_embedding to false or use one joint vocabulary")


def build_model(
    config: ModelConfig, vocab_size: int | None = None, *, init: bool = True, tgt_vocab_size: int | None = None
) -> Model:
    """Assemble the model named by ``config``.

    Args:
        vocab_size: rows of the embedding and output layer; default ``config.vocab_size``. When both are
            given they must agree.
        init: initialise weights for training from scratch (skip it when a checkpoint will be loaded).
        tgt_vocab_size: rows of the decoder side and the targets when they have their own vocabulary
            (encoder-decoder models trained on ``mt`` data with a target tokenizer); default ``vocab_size``.
    """
    if vocab_size is None:
        vocab_size = config.vocab_size
    if vocab_size is None:
        raise ConfigError("the vocabulary size is unknown: set vocab_size in the config or pass a tokenizer")
    if config.vocab_size is not None and config.vocab_size != vocab_size:
        raise ConfigError(
            f"vocabulary size mismatch: the config says vocab_size={config.vocab_size}, "
            f"the tokenizer has {vocab_size} pieces"
        )
    model = Model(config, vocab_size, tgt_vocab_size)
    if init:
        model.init_weights()
    return model
