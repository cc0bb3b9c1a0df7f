"""Convert an HF LLaMA directory (safetensors or .bin, single or sharded; GQA; any vocabulary) to TencentPretrain.

Every size comes from the directory's config.json; a TencentPretrain JSON config is written beside the output
(x.bin -> x_config.json). Tensors are converted one shard at a time.

    python3 scripts/convert_llama_from_huggingface_to_tencentpretrain.py \\
        --input_model_path models/llama-7b-hf/ --output_model_path models/llama-7b.bin
"""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import hf_to_tencentpretrain_main


def main(argv: Sequence[str] | None = None) -> int:
    return hf_to_tencentpretrain_main("llama", argv, __doc__)


if __name__ == "__main__":
    run(main)
