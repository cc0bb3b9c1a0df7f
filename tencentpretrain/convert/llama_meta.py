"""The Meta LLaMA (``consolidated.*.pth``) <-> TencentPretrain weight map: a pure rename.

Both use the interleaved RoPE layout, so no tensor is permuted.
"""

from __future__ import annotations

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
