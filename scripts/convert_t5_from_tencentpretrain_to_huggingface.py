"""Convert a TencentPretrain t5 checkpoint into an HF model directory (config.json + model.safetensors)."""

import functools

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_family import tencentpretrain_to_hf_main
from tencentpretrain.convert.t5_hf import T5_HF

if __name__ == "__main__":
    run(functools.partial(tencentpretrain_to_hf_main, T5_HF))
