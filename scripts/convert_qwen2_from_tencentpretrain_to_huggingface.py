"""Convert a TencentPretrain Qwen2 checkpoint (a config with qkv_bias, e.g. models/qwen2/7b_config.json) into an
HF Qwen2ForCausalLM directory (config.json + safetensors shards + index), refusing a config the HF class cannot
compute."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import tencentpretrain_to_hf_main


def main(argv: Sequence[str] | None = None) -> int:
    return tencentpretrain_to_hf_main("qwen2", argv, __doc__)


if __name__ == "__main__":
    run(main)
