"""Convert an HF model directory of any registered family (tencentpretrain/convert/families/: the family
comes from config.json's model_type) into a TencentPretrain checkpoint, shard by shard.

    python3 scripts/convert_from_huggingface_to_tencentpretrain.py --input_model_path models/bert-base-hf/ \\
        --output_model_path models/bert-base.bin
"""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import hf_to_tencentpretrain_main


def main(argv: Sequence[str] | None = None) -> int:
    return hf_to_tencentpretrain_main(None, argv, __doc__)


if __name__ == "__main__":
    run(main)
