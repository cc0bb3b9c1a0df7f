"""Convert a TencentPretrain checkpoint converted from RoBERTa into an HF RobertaForMaskedLM directory
(config.json + model.safetensors)."""

import functools

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_family import tencentpretrain_to_hf_main
from tencentpretrain.convert.roberta_hf import ROBERTA_HF

if __name__ == "__main__":
    run(functools.partial(tencentpretrain_to_hf_main, ROBERTA_HF))
