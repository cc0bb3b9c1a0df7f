"""Convert an HF t5 model directory into a TencentPretrain checkpoint (strict: every tensor accounted for)."""

import functools

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_family import hf_to_tencentpretrain_main
from tencentpretrain.convert.t5_hf import T5_HF

if __name__ == "__main__":
    run(functools.partial(hf_to_tencentpretrain_main, T5_HF))
