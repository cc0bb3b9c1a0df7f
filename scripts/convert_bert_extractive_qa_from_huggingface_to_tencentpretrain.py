"""Convert an HF BertForQuestionAnswering into the TencentPretrain checkpoint of finetune/run_cmrc.py
(the encoder's keys + output_layer), strictly: every tensor used, every key produced.
The input is an HF directory (a JSON config with labels_num is then written beside the output) or, as with the
original, a bare state dict (pytorch_model.bin; --layers_num: the layers it must hold, default those present)."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import hf_to_tencentpretrain_main


def main(argv: Sequence[str] | None = None) -> int:
    return hf_to_tencentpretrain_main("bert", argv, __doc__, head="BertForQuestionAnswering")


if __name__ == "__main__":
    run(main)
