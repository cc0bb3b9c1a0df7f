"""Convert a TencentPretrain BLOOM checkpoint into an HF BloomForCausalLM directory, refusing a config the HF class
cannot compute (e.g. the original's models/bloom configs: no embedding LayerNorm, the exact GELU)."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import tencentpretrain_to_hf_main


def main(argv: Sequence[str] | None = None) -> int:
    return tencentpretrain_to_hf_main("bloom", argv, __doc__)


if __name__ == "__main__":
    run(main)
