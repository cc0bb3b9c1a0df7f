"""Convert a TencentPretrain Pegasus checkpoint into an HF PegasusForConditionalGeneration directory, refusing a
config the HF class cannot compute (e.g. the original's models/pegasus configs: the original's sinusoidal table
and LayerNorm)."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import tencentpretrain_to_hf_main


def main(argv: Sequence[str] | None = None) -> int:
    return tencentpretrain_to_hf_main("pegasus", argv, __doc__)


if __name__ == "__main__":
    run(main)
