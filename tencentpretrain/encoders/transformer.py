"""The transformer encoder (config ``encoder: "transformer"``): a stack of TransformerLayer.

It owns what is shared by all layers: the attention mask, the rotary angles, the final layer norm of
pre-norm models, and the walk over the KV cache.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.layers.alibi import alibi_additive_mask
from tencentpretrain.layers.kv_cache import KVCache
from tencentpretrain.layers.masks import build_attention_mask
from tencentpretrain.layers.packing import Packing
from tencentpretrain.layers.relative_position import RelativePositionEmbedding
from tencentpretrain.layers.rope import rope_rotations
from tencentpretrain.layers.transformer_layer import TransformerLayer
from tencentpretrain.registry import ENCODERS, LAYERNORMS


@ENCODERS.register("transformer")
class TransformerEncoder(nn.Module):
    """State keys: ``encoder.transformer.{i}.*`` (or ``encoder.transformer.*`` with parameter sharing),
    ``encoder.layer_norm.*`` for pre-norm models, ``encoder.linear.*`` with factorized embeddings."""

    uses_attention = True  # the config checks its head arithmetic

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.has_residual_attention:
            raise ConfigError("has_residual_attention is not supported yet")
        self.config = config
        self.layers_num = config.layers_num
        self.mask_kind = config.mask
        if config.factorized_embedding_parameterization:
            self.linear = nn.Linear(config.emb_size, config.hidden_size)
        if config.parameter_sharing:
            self.transformer = TransformerLayer(config)
        else:
            self.transformer = nn.ModuleList(TransformerLayer(config) for _ in range(config.layers_num))
        if config.layernorm_positioning == "pre":
            self.layer_norm = LAYERNORMS.get(config.layernorm)(config.hidden_size, eps=config.layernorm_eps)
        if config.relative_position_embedding:  # T5: one bias table shared by all layers
            self.relative_pos_emb = RelativePositionEmbedding(
                heads_num=config.heads_num, buckets_num=config.relative_attention_buckets_num, bidirectional=True
            )
        self.gradient_checkpointing = False  # set by transforms.activation_checkpointing

    def layer(self, index: int) -> TransformerLayer:
        return self.transformer if self.config.parameter_sharing else self.transformer[index]

    def forward(
        self,
        emb: torch.Tensor,
        seg: torch.Tensor,
        *,
        positions: torch.Tensor,
        cache: KVCache | None = None,
        honor_padding: bool = True,
        skip_padding: bool = False,
    ) -> torch.Tensor:
        """Encode ``emb`` (B, T, E) -> (B, T, H).

        Args:
            seg: (B, T) segment ids, 0 = padding.
            positions: (B, T) positions for rotary embeddings.
            cache: KV cache to extend (incremental decoding).
            honor_padding: False lets a causal model skip the padding mask (training on right-padded data,
                where padding comes after every scored position), which allows the fused causal kernel.
            skip_padding: run the token-wise work on the real tokens only (``layers.packing``); the states
                at padding positions come back as zeros. For callers that read real positions only.
        """
        hidden = self.linear(emb) if self.config.factorized_embedding_parameterization else emb
        packing = Packing(seg > 0) if skip_padding and cache is None else None
        if packing is not None:
            hidden = packing.pack(hidden)  # (N, H)
        query_start = cache.length if cache is not None else 0
        key_seg = seg if cache is None else cache.stage(seg)  # (B, S): every key slot, the cached ones included
        position_bias = self.config.relative_position_embedding or self.config.alibi_position_embedding
        mask = self._mask(key_seg, query_start, cache, honor_padding or position_bias)
        if self.config.relative_position_embedding:  # bias folded into a float additive mask
            mask = self.relative_pos_emb.additive_mask(mask, query_start)
        elif self.config.alibi_position_embedding:
            mask = alibi_additive_mask(mask, key_seg, self.config.heads_num, hidden.dtype)
        rope = self._rope(positions)
        for i in range(self.layers_num):
            layer = self.layer(i)
            if self.gradient_checkpointing and self.training:
                hidden = torch.utils.checkpoint.checkpoint(
                    layer, hidden, mask=mask, rope=rope, packing=packing, use_reentrant=False
                )
            else:
                hidden = layer(hidden, mask=mask, rope=rope, cache=cache, layer_index=i, packing=packing)
        if cache is not None:
            cache.advance(seg.shape[1])
        if self.config.layernorm_positioning == "pre":
            hidden = self.layer_norm(hidden)
        return hidden if packing is None else packing.unpack(hidden)

    def _mask(self, key_seg: torch.Tensor, query_start: int, cache: KVCache | None, honor_padding: bool
              ) -> torch.Tensor | None:
        if cache is None and self.mask_kind == "causal" and not honor_padding:
            return None  # plain causal: scaled_dot_product_attention's is_causal path
        return build_attention_mask(self.mask_kind, key_seg, query_start)

    def _rope(self, positions: torch.Tensor) -> torch.Tensor | None:
        if not self.config.rotary_position_embedding:
            return None
        c = self.config
        return rope_rotations(positions, c.head_size, c.rope_theta, c.rope_scaling_factor)
