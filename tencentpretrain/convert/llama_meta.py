"""The Meta LLaMA (``consolidated.*.pth``) <-> TencentPretrain weight map: a pure rename.

Both use the interleaved RoPE layout, so no tensor is permuted.
"""

from __future__ import annotations

from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.weight_map import Rule, WeightMap


def llama_meta_weight_map() -> WeightMap:
    layer, attn, ffn = "layers.{}", "encoder.transformer.{}.self_attn", "encoder.transformer.{}.feed_forward"
    rules = [
        Rule("tok_embeddings.weight", "embedding.word.embedding.weight"),
        Rule(f"{layer}.attention.wq.weight", f"{attn}.linear_layers.0.weight"),
        Rule(f"{layer}.attention.wk.weight", f"{attn}.linear_layers.1.weight"),
        Rule(f"{layer}.attention.wv.weight", f"{attn}.linear_layers.2.weight"),
        Rule(f"{layer}.attention.wo.weight", f"{attn}.final_linear.weight"),
        Rule(f"{layer}.feed_forward.w1.weight", f"{ffn}.linear_gate.weight"),
        Rule(f"{layer}.feed_forward.w3.weight", f"{ffn}.linear_1.weight"),
        Rule(f"{layer}.feed_forward.w2.weight", f"{ffn}.linear_2.weight"),
        Rule(f"{layer}.attention_norm.weight", "encoder.transformer.{}.layer_norm_1.weight"),
        Rule(f"{layer}.ffn_norm.weight", "encoder.transformer.{}.layer_norm_2.weight"),
        Rule("norm.weight", "encoder.layer_norm.weight"),
        Rule("output.weight", "target.lm.output_layer.weight"),
    ]
    return WeightMap("Meta LLaMA", rules, ignored_external=[r"^rope\.freqs$"])


# ---------------------------------------------------------------------------------------------- model parallel shards
# How Meta's model-parallel code (fairscale layers) splits each weight across consolidated.NN.pth files:
# ColumnParallelLinear (wq, wk, wv, w1, w3, output) splits output rows (dim 0); RowParallelLinear (wo, w2)
# splits input columns (dim 1); LLaMA 1/2's ParallelEmbedding splits the embedding width (dim 1), LLaMA 3's
# VocabParallelEmbedding the vocabulary (dim 0). Norms (1-D) are replicated in every shard.
META_SHARD_DIMS: dict[str, int] = {
    "attention.wq.weight": 0,
    "attention.wk.weight": 0,
    "attention.wv.weight": 0,
    "attention.wo.weight": 1,
    "feed_forward.w1.weight": 0,
    "feed_forward.w3.weight": 0,
    "feed_forward.w2.weight": 1,
    "output.weight": 0,
    "tok_embeddings.weight": 1,
}


def meta_shard_dim(key: str, shard_shape: tuple[int, ...] | None = None, dim: int | None = None) -> int | None:
    """The dimension ``key`` is split along across Meta shards; None for a replicated (1-D) tensor.

    For ``tok_embeddings.weight`` the shard's shape decides: a shard as wide as the model (``dim``) was split
    by vocabulary (LLaMA 3), otherwise by width (LLaMA 1/2).
    """
    if shard_shape is not None and len(shard_shape) < 2:
        return None
    suffix = key.split(".", 2)[-1] if key.startswith("layers.") else key
    if suffix not in META_SHARD_DIMS:
        return None
    if suffix == "tok_embeddings.weight" and shard_shape is not None and dim is not None:
        return 0 if shard_shape[1] == dim else 1
    return META_SHARD_DIMS[suffix]


# ---------------------------------------------------------------------------------------------- params.json
def meta_ffn_size(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """The feed-forward width Meta's code derives from params.json."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def model_config_from_meta(params: dict, *, vocab_size: int, feedforward_size: int) -> ModelConfig:
    """A TencentPretrain LLaMA config from Meta's params.json; vocabulary and FFN width come from the
    tensors (params.json of LLaMA 1 says vocab_size -1) and the FFN width is checked against params.json."""
    from tencentpretrain.errors import ConfigError

    dim, heads = params["dim"], params["n_heads"]
    if params.get("use_scaled_rope"):
        raise ConfigError("params.json: use_scaled_rope (LLaMA 3.1 RoPE scaling) is not supported")
    if "multiple_of" in params:
        implied = meta_ffn_size(dim, params["multiple_of"], params.get("ffn_dim_multiplier"))
        if implied != feedforward_size:
            raise ConfigError(f"params.json implies a feed-forward width of {implied}, the weights have "
                              f"{feedforward_size}")
    declared = params.get("vocab_size", -1)
    if declared not in (-1, None) and declared != vocab_size:
        raise ConfigError(f"params.json says vocab_size={declared}, tok_embeddings has {vocab_size} rows")
    return ModelConfig(
        emb_size=dim, hidden_size=dim, feedforward_size=feedforward_size, heads_num=heads,
        local_kv_heads_num=params.get("n_kv_heads") or heads, layers_num=params["n_layers"],
        vocab_size=vocab_size, max_seq_length=params.get("max_seq_len", 2048), hidden_act="silu", dropout=0.0,
        embedding=("word",), remove_transformer_bias=True, remove_embedding_layernorm=True,
        rotary_position_embedding=True, rope_theta=float(params.get("rope_theta", 10000.0)),
        encoder="transformer", feed_forward="gated", mask="causal", layernorm_positioning="pre",
        layernorm="rms", layernorm_eps=params.get("norm_eps", 1e-6), target=("lm",),
    )


def meta_params_from_model_config(config: ModelConfig, vocab_size: int) -> dict:
    """Meta's params.json for ``config``; multiple_of / ffn_dim_multiplier are chosen so that Meta's formula
    gives back exactly ``feedforward_size``."""
    from tencentpretrain.errors import ConfigError

    if config.head_size * config.heads_num != config.hidden_size or config.rope_scaling or config.tie_weights:
        raise ConfigError("Meta's format cannot describe this model (custom head size, RoPE scaling or tied "
                          "embeddings); export it to HF instead")
    params = {"dim": config.hidden_size, "n_layers": config.layers_num, "n_heads": config.heads_num}
    if config.kv_heads_num != config.heads_num:
        params["n_kv_heads"] = config.kv_heads_num
    params["vocab_size"] = vocab_size
    params.update(_ffn_params(config.hidden_size, config.feedforward_size))
    params["norm_eps"] = config.layernorm_eps
    if config.rope_theta != 10000.0:
        params["rope_theta"] = config.rope_theta
    params["max_seq_len"] = config.max_seq_length
    return params


def _ffn_params(dim: int, ffn: int) -> dict:
    for multiple_of in (256, 128, 64, 32, 16, 8, 4, 2, 1):
        if meta_ffn_size(dim, multiple_of, None) == ffn:
            return {"multiple_of": multiple_of}
    for multiple_of in (4096, 1024, 256):
        for multiplier in (1.3, 1.5, 2.0, 1.25, 1.0):
            if meta_ffn_size(dim, multiple_of, multiplier) == ffn:
                return {"multiple_of": multiple_of, "ffn_dim_multiplier": multiplier}
    # multiple_of = ffn rounds any width in (0, ffn] up to ffn
    return {"multiple_of": ffn, "ffn_dim_multiplier": ffn / int(2 * (4 * dim) / 3)}
