"""Fine-tune a classifier with k-fold cross validation; save the out-of-fold probabilities for stacking.

    python finetune/run_classifier_cv.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/chnsenticorp/train.tsv --output_model_path models/classifier_model.bin \\
        --train_features_path datasets/chnsenticorp/train_features.npy --folds_num 5 --epochs_num 3
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.classifier_cv import finetune_main as main

if __name__ == "__main__":
    run(main)
