"""Fine-tune a pretrained model on a multi-label classification TSV (header ``label<TAB>text_a[<TAB>text_b]``,
labels such as ``0,3``).

    python finetune/run_classifier_multi_label.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/toutiao/train.tsv --dev_path datasets/toutiao/dev.tsv \\
        --test_path datasets/toutiao/test.tsv --epochs_num 3 --batch_size 32
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.multi_label import finetune_main as main

if __name__ == "__main__":
    run(main)
