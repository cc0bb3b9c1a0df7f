"""Grid search of a classifier's batch size, learning rate and number of epochs, scored on the dev set.

    python finetune/run_classifier_grid.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/chnsenticorp/train.tsv --dev_path datasets/chnsenticorp/dev.tsv \\
        --batch_size_list 32 64 --learning_rate_list 3e-5 1e-4 3e-4 --epochs_num_list 3 5 8
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.classifier_grid import finetune_main as main

if __name__ == "__main__":
    run(main)
