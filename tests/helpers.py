"""Helpers shared by the tests (tiny configs, paths)."""

from __future__ import annotations

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_llama_config(**overrides):
    """2 layers, hidden 64, 4 heads, 2 KV heads: the LLaMA architecture at test size."""
    from tencentpretrain.config import ModelConfig

    values = dict(
        emb_size=64, hidden_size=64, feedforward_size=176, heads_num=4, local_kv_heads_num=2, layers_num=2,
        hidden_act="silu", dropout=0.0, max_seq_length=128, embedding=("word",), remove_transformer_bias=True,
        remove_embedding_layernorm=True, rotary_position_embedding=True, encoder="transformer",
        feed_forward="gated", mask="causal", layernorm_positioning="pre", layernorm="rms", target=("lm",),
    )
    values.update(overrides)
    return ModelConfig(**values)


def write_sharded(state, directory: str, *, max_shard_bytes: int, layout=None) -> list[str]:
    """Write ``state`` as a sharded directory through the library's one sharded writer
    (``convert.stream.StateWriter``); returns the shard file names, in order."""
    from tencentpretrain.convert.stream import TENCENTPRETRAIN_BLOCKS, StateWriter

    writer = StateWriter(directory, sharded=True, layout=layout or TENCENTPRETRAIN_BLOCKS,
                         max_shard_bytes=max_shard_bytes)
    for key, tensor in state.items():
        writer.add(key, tensor)
    return [os.path.basename(path) for path in writer.close()]
