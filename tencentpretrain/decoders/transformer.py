"""The transformer decoder (config ``decoder: "transformer"``) of encoder-decoder models (T5, BART, MT).

Each layer has causal self-attention over the target, context attention over the encoder output, and a
feed-forward block, each with its residual and layer norm (pre- or post-norm like the encoder). State keys
follow the original: ``decoder.transformer_decoder.{i}.{self_attn,context_attn}.*`` (Q, K, V =
``linear_layers.{0,1,2}``, O = ``final_linear``), ``.feed_forward.*``, ``.layer_norm_{1,2,3}.*``; pre-norm
models add ``decoder.layer_norm.*``; T5's relative position bias is ``decoder.self_pos_emb.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.layers.dropout import Dropout
from tencentpretrain.layers.kv_cache import KVCache
from tencentpretrain.layers.masks import build_attention_mask
from tencentpretrain.layers.relative_position import RelativePositionEmbedding
from tencentpretrain.layers.transformer_layer import attention_from_config
from tencentpretrain.registry import DECODERS, FEEDFORWARDS, LAYERNORMS


class TransformerDecoderLayer(nn.Module):
    """Submodules in the original's order: self_attn, dropout_1, context_attn, dropout_2, feed_forward,
    dropout_3, layer_norm_1/2/3.

    pre-LN (T5):  h = x + attn(ln1(x));  m = h + ctx(ln2(h), memory);  out = m + ffn(ln3(m))
    post-LN:      h = ln1(x + attn(x));  m = ln2(h + ctx(h, memory));  out = ln3(m + ffn(m))
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.layernorm_positioning == "pre"
        self.self_attn = attention_from_config(config)
        self.dropout_1 = Dropout(config.dropout)
        self.context_attn = attention_from_config(config)
        self.dropout_2 = Dropout(config.dropout)
        self.feed_forward = FEEDFORWARDS.get(config.feed_forward)(
            config.hidden_size, config.feedforward_size, config.hidden_act, bias=config.use_bias
        )
        self.dropout_3 = Dropout(config.dropout)
        norm = LAYERNORMS.get(config.layernorm)
        self.layer_norm_1 = norm(config.hidden_size, eps=config.layernorm_eps)
        self.layer_norm_2 = norm(config.hidden_size, eps=config.layernorm_eps)
        self.layer_norm_3 = norm(config.hidden_size, eps=config.layernorm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        memory: torch.Tensor,
        *,
        self_mask: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer_index: int = 0,
    ) -> torch.Tensor:
        """hidden (B, T, H), memory (B, S, H) -> (B, T, H). self_mask (B, 1|h, T, T_total), context_mask
        (B, 1, T, S): bool (True = visible) or float additive; None: plain causal / every source visible."""
        attend = lambda x: self.self_attn(x, mask=self_mask, cache=cache, layer_index=layer_index)  # noqa: E731
        context = lambda x: self.context_attn(x, memory, mask=context_mask)  # noqa: E731
        if self.pre_norm:
            hidden = hidden + self.dropout_1(attend(self.layer_norm_1(hidden)))
            hidden = hidden + self.dropout_2(context(self.layer_norm_2(hidden)))
            return hidden + self.dropout_3(self.feed_forward(self.layer_norm_3(hidden)))
        hidden = self.layer_norm_1(hidden + self.dropout_1(attend(hidden)))
        hidden = self.layer_norm_2(hidden + self.dropout_2(context(hidden)))
        return self.layer_norm_3(hidden + self.dropout_3(self.feed_forward(hidden)))


@DECODERS.register("transformer")
class TransformerDecoder(nn.Module):
    """A stack of ``decoder_layers_num`` (default ``layers_num``) TransformerDecoderLayer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.layers_num = config.decoder_layers_num or config.layers_num
        self.transformer_decoder = nn.ModuleList(TransformerDecoderLayer(config) for _ in range(self.layers_num))
        if config.layernorm_positioning == "pre":
            self.layer_norm = LAYERNORMS.get(config.layernorm)(config.hidden_size, eps=config.layernorm_eps)
        if config.relative_position_embedding:  # causal buckets: only distances to the past
            self.self_pos_emb = RelativePositionEmbedding(
                heads_num=config.heads_num, buckets_num=config.relative_attention_buckets_num, bidirectional=False
            )

    def _self_mask(self, tgt_seg: torch.Tensor, cache: KVCache | None) -> torch.Tensor | None:
        """The self-attention mask (B, 1 | heads, T, T_total); None for plain causal attention (training
        without padding or position bias), which attention computes without a mask tensor."""
        if cache is None and not self.config.relative_position_embedding and bool((tgt_seg > 0).all()):
            return None
        query_start = cache.length if cache is not None else 0
        key_seg = cache.stage(tgt_seg) if cache is not None else tgt_seg
        mask = build_attention_mask("causal", key_seg, query_start)  # (B, 1, T, T_total)
        if self.config.relative_position_embedding:
            mask = self.self_pos_emb.additive_mask(mask, query_start)
        return mask

    def forward(
        self,
        memory: torch.Tensor,
        emb: torch.Tensor,
        src_seg: torch.Tensor,
        tgt_seg: torch.Tensor,
        *,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Decode target embeddings ``emb`` (B, T, E) against the encoder output ``memory`` (B, S, H).

        Args:
            src_seg: (B, S) source segment ids, 0 = padding (hidden from context attention).
            tgt_seg: (B, T) target segment ids, 0 = padding.
            cache: self-attention KV cache of the decoder layers (incremental generation).
        Returns:
            (B, T, H)
        """
        self_mask = self._self_mask(tgt_seg, cache)
        length = emb.shape[1]
        context_mask = None  # every source position visible: attention needs no mask tensor (a faster kernel)
        if not bool((src_seg > 0).all()):
            context_mask = (src_seg > 0)[:, None, None, :].expand(-1, -1, length, -1)  # (B, 1, T, S)
        hidden = emb
        for i, layer in enumerate(self.transformer_decoder):
            hidden = layer(hidden, memory, self_mask=self_mask, context_mask=context_mask, cache=cache, layer_index=i)
        if cache is not None:
            cache.advance(length)
        if self.config.layernorm_positioning == "pre":
            hidden = self.layer_norm(hidden)
        return hidden
