"""Convert a TencentPretrain bert checkpoint into an HF model directory (config.json + model.safetensors)."""

import functools

from tencentpretrain.cli import run
from tencentpretrain.convert.bert_hf import BERT_HF
from tencentpretrain.convert.hf_family import tencentpretrain_to_hf_main

if __name__ == "__main__":
    run(functools.partial(tencentpretrain_to_hf_main, BERT_HF))
