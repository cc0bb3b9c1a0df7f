"""Convert a TencentPretrain vit checkpoint into an HF model directory (config.json + model.safetensors)."""

import functools

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_family import tencentpretrain_to_hf_main
from tencentpretrain.convert.vit_hf import VIT_HF

if __name__ == "__main__":
    run(functools.partial(tencentpretrain_to_hf_main, VIT_HF))
