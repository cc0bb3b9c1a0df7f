"""Pre-train or fine-tune a model; flags as TencentPretrain's pretrain.py. See docs/training.md.

    python3 pretrain.py --dataset_path dataset.pt --spm_model_path tokenizer.model \
        --config_path models/llama/7b_config.json --output_model_path models/out.bin ...
    torchrun --nproc_per_node 2 pretrain.py --world_size 2 ...
    deepspeed pretrain.py --deepspeed --deepspeed_config models/deepspeed_zero3_config.json --enable_zero3 ...
"""

from tencentpretrain.cli import run
from tencentpretrain.training.cli import run_and_exit

if __name__ == "__main__":
    run(run_and_exit)
