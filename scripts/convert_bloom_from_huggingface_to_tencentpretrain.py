"""Convert an HF BLOOM (BloomForCausalLM) directory into a TencentPretrain checkpoint, shard by shard and strict
(ALiBi, the word-embedding LayerNorm, the per-head fused query_key_value split into Q, K and V, a tied head). A JSON
config is written beside the output (x.bin -> x_config.json) unless --output_config_path says where."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import hf_to_tencentpretrain_main


def main(argv: Sequence[str] | None = None) -> int:
    return hf_to_tencentpretrain_main("bloom", argv, __doc__)


if __name__ == "__main__":
    run(main)
