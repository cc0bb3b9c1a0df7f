"""Convert an HF Pegasus (PegasusForConditionalGeneration) directory into a TencentPretrain encoder-decoder
checkpoint, shard by shard and strict (pre-norm with final LayerNorms, shared word table, tied head with its
final_logits_bias; HF's fixed sinusoidal positions become the pegasus_sinusoidalpos embedding). A JSON config is
written beside the output (x.bin -> x_config.json) unless --output_config_path says where."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import hf_to_tencentpretrain_main


def main(argv: Sequence[str] | None = None) -> int:
    return hf_to_tencentpretrain_main("pegasus", argv, __doc__)


if __name__ == "__main__":
    run(main)
