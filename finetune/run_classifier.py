"""Fine-tune a pretrained model on a classification TSV (header ``label<TAB>text_a[<TAB>text_b]``).

    python finetune/run_classifier.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/chnsenticorp/train.tsv --dev_path datasets/chnsenticorp/dev.tsv \\
        --test_path datasets/chnsenticorp/test.tsv --epochs_num 3 --batch_size 32
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.classifier import finetune_main as main

if __name__ == "__main__":
    run(main)
