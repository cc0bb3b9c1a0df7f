"""Convert a TencentPretrain LLaMA checkpoint to an HF directory that transformers loads with from_pretrained.

Writes config.json (true vocab_size, KV heads, rope_theta, rms_norm_eps, max_position_embeddings), safetensors
shards + index, generation_config.json and, with --spm_model_path, tokenizer.model, tokenizer.json,
tokenizer_config.json (bos/eos and the chat template) and special_tokens_map.json.

    python3 scripts/convert_llama_from_tencentpretrain_to_huggingface.py \\
        --input_model_path models/llama_zh_7b.bin --config_path models/llama/7b_config.json \\
        --spm_model_path models/tokenizer.model --output_model_path models/llama_zh_7b_hf/
"""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import tencentpretrain_to_hf_main


def main(argv: Sequence[str] | None = None) -> int:
    return tencentpretrain_to_hf_main("llama", argv, __doc__)


if __name__ == "__main__":
    run(main)
