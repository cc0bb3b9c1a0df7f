"""Convert a TencentPretrain checkpoint into an HF directory of the family named by --model_type (any
registered family, tencentpretrain/convert/families/).

    python3 scripts/convert_from_tencentpretrain_to_huggingface.py --model_type bert \\
        --input_model_path models/bert-base.bin --output_model_path models/bert-base-hf/
"""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import tencentpretrain_to_hf_main


def main(argv: Sequence[str] | None = None) -> int:
    return tencentpretrain_to_hf_main(None, argv, __doc__)


if __name__ == "__main__":
    run(main)
