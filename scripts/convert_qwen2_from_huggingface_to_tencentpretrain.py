"""Convert an HF Qwen2 (Qwen2ForCausalLM) directory into a TencentPretrain checkpoint, shard by shard
(strict: every tensor accounted for; Q/K/V biases kept, a tied output layer restored from the embedding).
A JSON config is written beside the output (x.bin -> x_config.json) unless --output_config_path says where."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import hf_to_tencentpretrain_main


def main(argv: Sequence[str] | None = None) -> int:
    return hf_to_tencentpretrain_main("qwen2", argv, __doc__)


if __name__ == "__main__":
    run(main)
