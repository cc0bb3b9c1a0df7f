"""GGUF tensor names (llama.cpp) <-> TencentPretrain keys, for the HF families that declare a GGUF architecture.

Kept apart from the exporter (``llama_gguf``) so that family files can build their GGUF maps from it without an
import cycle (the exporter looks the families up).
"""

from __future__ import annotations

from tencentpretrain.convert.weight_map import Rule, WeightMap


def llama_gguf_weight_map() -> WeightMap:
    """GGUF tensor names (llama.cpp's ``llama`` architecture) <-> TencentPretrain keys; no tensor changes."""
    blk, attn, ffn = "blk.{}", "encoder.transformer.{}.self_attn", "encoder.transformer.{}.feed_forward"
    rules = [
        Rule("token_embd.weight", "embedding.word.embedding.weight"),
        Rule(f"{blk}.attn_q.weight", f"{attn}.linear_layers.0.weight"),
        Rule(f"{blk}.attn_k.weight", f"{attn}.linear_layers.1.weight"),
        Rule(f"{blk}.attn_v.weight", f"{attn}.linear_layers.2.weight"),
        Rule(f"{blk}.attn_output.weight", f"{attn}.final_linear.weight"),
        Rule(f"{blk}.ffn_gate.weight", f"{ffn}.linear_gate.weight"),
        Rule(f"{blk}.ffn_up.weight", f"{ffn}.linear_1.weight"),
        Rule(f"{blk}.ffn_down.weight", f"{ffn}.linear_2.weight"),
        Rule(f"{blk}.attn_norm.weight", "encoder.transformer.{}.layer_norm_1.weight"),
        Rule(f"{blk}.ffn_norm.weight", "encoder.transformer.{}.layer_norm_2.weight"),
        Rule("output_norm.weight", "encoder.layer_norm.weight"),
        Rule("output.weight", "target.lm.output_layer.weight"),
    ]
    return WeightMap("GGUF llama", rules)
