"""Convert an HF BERT (BertForMaskedLM / BertForPreTraining) directory into a TencentPretrain checkpoint, shard by shard
(strict: every tensor accounted for). A JSON config is written beside the output (x.bin -> x_config.json)
unless --output_config_path says where."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import hf_to_tencentpretrain_main


def main(argv: Sequence[str] | None = None) -> int:
    return hf_to_tencentpretrain_main("bert", argv, __doc__)


if __name__ == "__main__":
    run(main)
