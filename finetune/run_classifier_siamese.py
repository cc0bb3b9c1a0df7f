"""Fine-tune a siamese (SBERT-style) classifier on a TSV with the header ``label<TAB>text_a<TAB>text_b``: each
text is encoded on its own, the pooled pair [u, v, |u - v|, u * v] is classified.

    python finetune/run_classifier_siamese.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/sbert/base_config.json \\
        --train_path datasets/lcqmc/train.tsv --dev_path datasets/lcqmc/dev.tsv \\
        --test_path datasets/lcqmc/test.tsv --epochs_num 3 --batch_size 32
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.siamese import finetune_main as main

if __name__ == "__main__":
    run(main)
