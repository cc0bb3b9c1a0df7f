"""Convert an HF bert model directory into a TencentPretrain checkpoint (strict: every tensor accounted for)."""

import functools

from tencentpretrain.cli import run
from tencentpretrain.convert.bert_hf import BERT_HF
from tencentpretrain.convert.hf_family import hf_to_tencentpretrain_main

if __name__ == "__main__":
    run(functools.partial(hf_to_tencentpretrain_main, BERT_HF))
