"""Multi-task classification fine-tuning through DeepSpeed; each DIR holds train.tsv and dev.tsv.

    deepspeed --num_gpus 2 finetune/run_classifier_mt_deepspeed.py --world_size 2 \\
        --pretrained_model_path models/bert_base.bin --vocab_path models/google_zh_vocab.txt \\
        --config_path models/bert/base_config.json --deepspeed_config models/deepspeed_config.json \\
        --dataset_path_list datasets/chnsenticorp/ datasets/lcqmc/ --epochs_num 3 --batch_size 32
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.classifier_deepspeed import mt_finetune_main as main

if __name__ == "__main__":
    run(main)
