"""The composite Model and ``build_model``: components are looked up by name in the registries.

Child modules are attached with ``add_module(name, ...)`` so that state_dict keys are TencentPretrain's:
``embedding.word.embedding.weight``, ``encoder.transformer.0.self_attn.linear_layers.0.weight``,
``target.lm.output_layer.weight``. Nothing here touches a device; parallelism, LoRA, quantization and
activation checkpointing are transforms applied to a built model.
"""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.layers.kv_cache import KVCache
from tencentpretrain.registry import EMBEDDINGS, ENCODERS, LAYERNORMS, TARGETS
from tencentpretrain.targets.output import TargetOutput

INIT_STD = 0.02


class Embedding(nn.Module):
    """Sum of the named embeddings, then the optional embedding layer norm and dropout."""

    def __init__(self, config: ModelConfig, vocab_size: int, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names
        for name in names:
            self.add_module(name, EMBEDDINGS.get(name)(config, vocab_size))
        if config.use_embedding_layernorm:
            self.layer_norm = LAYERNORMS.get("normal")(config.emb_size, eps=config.layernorm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, src: torch.Tensor, seg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """src, seg, positions (B, T) -> (B, T, E)."""
        emb = sum(getattr(self, name)(src, seg, positions) for name in self.names)
        if hasattr(self, "layer_norm"):
            emb = self.layer_norm(emb)
        return self.dropout(emb)


class Target(nn.Module):
    """The named training objectives; with several, their losses add up and metrics are merged."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.names = config.target
        for name in config.target:
            self.add_module(name, TARGETS.get(name)(config, vocab_size))

    def forward(
        self, hidden: torch.Tensor, tgt: torch.Tensor | dict[str, torch.Tensor], loss_mask: torch.Tensor
    ) -> TargetOutput:
        outputs = [
            getattr(self, name)(hidden, tgt[name] if isinstance(tgt, dict) else tgt, loss_mask)
            for name in self.names
        ]
        if len(outputs) == 1:
            return outputs[0]
        metrics = {k: v for out in outputs for k, v in out.metrics.items()}
        return TargetOutput(sum(out.loss for out in outputs), metrics)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of the first target that produces them (``lm``)."""
        for name in self.names:
            module = getattr(self, name)
            if hasattr(module, "logits"):
                return module.logits(hidden)
        raise ConfigError(f"none of the targets {list(self.names)} produces vocabulary logits")


class Model(nn.Module):
    """embedding -> encoder -> target, built from a ModelConfig."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        if config.decoder is not None:
            raise ConfigError(f"decoder {config.decoder!r}: encoder-decoder models are not supported yet")
        self.config = config
        self.vocab_size = vocab_size
        self.embedding = Embedding(config, vocab_size, config.embedding)
        self.encoder = ENCODERS.get(config.encoder)(config)
        self.target = Target(config, vocab_size)
        if config.tie_weights:
            self._tie_weights()

    def _tie_weights(self) -> None:
        if "lm" in self.config.target and "word" in self.config.embedding:
            self.target.lm.output_layer.weight = self.embedding.word.embedding.weight

    # ------------------------------------------------------------------ training
    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor | dict[str, torch.Tensor],
        seg: torch.Tensor,
        loss_mask: torch.Tensor | None = None,
    ) -> TargetOutput:
        """Training forward.

        Args:
            src: (B, T) input ids. tgt: (B, T) target ids (next tokens for ``lm``).
            seg: (B, T) segment ids, 0 = padding.
            loss_mask: (B, T) bool, positions whose target is scored; default ``seg > 0``.
        """
        positions = _default_positions(src)
        emb = self.embedding(src, seg, positions)
        hidden = self.encoder(emb, seg, positions=positions, honor_padding=False)
        return self.target(hidden, tgt, seg > 0 if loss_mask is None else loss_mask)

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
        if seg is None:
            seg = torch.ones_like(src)
        if positions is None:
            positions = _default_positions(src, start=cache.length if cache is not None else 0)
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
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif hasattr(module, "reset_parameters") and type(module).__module__.startswith("tencentpretrain"):
                module.reset_parameters()
        if self.config.tie_weights:
            self._tie_weights()


def _default_positions(src: torch.Tensor, start: int = 0) -> torch.Tensor:
    """(B, T) positions start, start + 1, ... for every row."""
    return torch.arange(start, start + src.shape[1], device=src.device).expand(src.shape[0], -1)


def build_model(config: ModelConfig, vocab_size: int | None = None, *, init: bool = True) -> Model:
    """Assemble the model named by ``config``.

    Args:
        vocab_size: rows of the embedding and output layer; default ``config.vocab_size``. When both are
            given they must agree.
        init: initialise weights for training from scratch (skip it when a checkpoint will be loaded).
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
    model = Model(config, vocab_size)
    if init:
        model.init_weights()
    return model
