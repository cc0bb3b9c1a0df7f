"""Fine-tune a pretrained model on a regression TSV (header ``label<TAB>text_a[<TAB>text_b]``, real labels);
reports Spearman's correlation on the dev and test sets.

    python finetune/run_regression.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/stsb/train.tsv --dev_path datasets/stsb/dev.tsv \\
        --test_path datasets/stsb/test.tsv --epochs_num 3 --batch_size 32
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.regression import finetune_main as main

if __name__ == "__main__":
    run(main)
