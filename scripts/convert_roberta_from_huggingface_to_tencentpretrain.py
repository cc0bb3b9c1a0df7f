"""Convert an HF RoBERTa (RobertaForMaskedLM) model directory into a TencentPretrain checkpoint (strict: every
tensor accounted for)."""

import functools

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_family import hf_to_tencentpretrain_main
from tencentpretrain.convert.roberta_hf import ROBERTA_HF

if __name__ == "__main__":
    run(functools.partial(hf_to_tencentpretrain_main, ROBERTA_HF))
