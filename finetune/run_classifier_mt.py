"""Fine-tune one encoder on several classification tasks (one head per task); each DIR holds train.tsv, dev.tsv.

    python finetune/run_classifier_mt.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --dataset_path_list datasets/chnsenticorp/ datasets/lcqmc/ \\
        --output_model_path models/multitask_classifier_model.bin --epochs_num 3 --batch_size 32
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.classifier_mt import finetune_main as main

if __name__ == "__main__":
    run(main)
