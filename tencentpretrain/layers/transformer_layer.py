"""One transformer layer: attention and feed-forward blocks with pre- or post-layer-norm residuals."""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.layers.attention import MultiHeadedAttention
from tencentpretrain.layers.dropout import Dropout
from tencentpretrain.layers.kv_cache import KVCache
from tencentpretrain.layers.packing import Packing
from tencentpretrain.registry import FEEDFORWARDS, LAYERNORMS


def attention_from_config(config: ModelConfig) -> MultiHeadedAttention:
    """The attention block of encoder and decoder layers, sized by ``config``."""
    return MultiHeadedAttention(
        config.hidden_size,
        config.heads_num,
        config.head_size,
        kv_heads_num=config.kv_heads_num,
        dropout=config.dropout,
        bias=config.use_bias,
        qkv_bias=config.use_qkv_bias,
        with_scale=not config.remove_attention_scale,
    )


class TransformerLayer(nn.Module):
    """Submodules in the original's order: self_attn, dropout_1, feed_forward, dropout_2, layer_norm_1/2.

    pre-LN (LLaMA, GPT-2):  h = x + drop(attn(ln1(x)));  out = h + drop(ffn(ln2(h)))
    post-LN (BERT):         h = ln1(x + drop(attn(x)));  out = ln2(h + drop(ffn(h)))
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.layernorm_positioning == "pre"
        self.self_attn = attention_from_config(config)
        self.dropout_1 = Dropout(config.dropout)
        self.feed_forward = FEEDFORWARDS.get(config.feed_forward)(
            config.hidden_size, config.feedforward_size, config.hidden_act, bias=config.use_bias
        )
        self.dropout_2 = Dropout(config.dropout)
        norm = LAYERNORMS.get(config.layernorm)
        self.layer_norm_1 = norm(config.hidden_size, eps=config.layernorm_eps)
        self.layer_norm_2 = norm(config.hidden_size, eps=config.layernorm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        *,
        mask: torch.Tensor | None,
        rope: torch.Tensor | None,
        cache: KVCache | None = None,
        layer_index: int = 0,
        packing: Packing | None = None,
    ) -> torch.Tensor:
        """(B, T, H) -> (B, T, H), or (N, H) -> (N, H) with ``packing``; see MultiHeadedAttention.forward."""
        attend = lambda x: self.self_attn(  # noqa: E731
            x, mask=mask, rope=rope, cache=cache, layer_index=layer_index, packing=packing
        )
        if self.pre_norm:
            hidden = hidden + self.dropout_1(attend(self.layer_norm_1(hidden)))
            return hidden + self.dropout_2(self.feed_forward(self.layer_norm_2(hidden)))
        hidden = self.layer_norm_1(hidden + self.dropout_1(attend(hidden)))
        return self.layer_norm_2(hidden + self.dropout_2(self.feed_forward(hidden)))
