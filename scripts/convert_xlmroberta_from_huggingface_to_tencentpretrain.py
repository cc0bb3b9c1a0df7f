"""Convert an HF XLM-RoBERTa (XLMRobertaForMaskedLM) directory into a TencentPretrain checkpoint, shard by shard
and strict. A JSON config is written beside the output (x.bin -> x_config.json) unless --output_config_path says
where. The vocabulary keeps its fairseq-offset ids: tokenize with --tokenizer xlmroberta."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import hf_to_tencentpretrain_main


def main(argv: Sequence[str] | None = None) -> int:
    return hf_to_tencentpretrain_main("xlm-roberta", argv, __doc__)


if __name__ == "__main__":
    run(main)
