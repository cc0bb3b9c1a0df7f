"""Convert an HF gpt2 model directory into a TencentPretrain checkpoint (strict: every tensor accounted for)."""

import functools

from tencentpretrain.cli import run
from tencentpretrain.convert.gpt2_hf import GPT2_HF
from tencentpretrain.convert.hf_family import hf_to_tencentpretrain_main

if __name__ == "__main__":
    run(functools.partial(hf_to_tencentpretrain_main, GPT2_HF))
