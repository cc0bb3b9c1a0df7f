"""Convert a TencentPretrain XLM-RoBERTa checkpoint into an HF XLMRobertaForMaskedLM directory, refusing a config
the HF class cannot compute."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import tencentpretrain_to_hf_main


def main(argv: Sequence[str] | None = None) -> int:
    return tencentpretrain_to_hf_main("xlm-roberta", argv, __doc__)


if __name__ == "__main__":
    run(main)
