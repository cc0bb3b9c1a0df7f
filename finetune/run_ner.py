"""Fine-tune a pretrained model for sequence labelling (NER) on a TSV with the header ``text_a<TAB>label``
(space-separated tokens and as many space-separated tags; ``--label2id_path`` maps the tags to ids).

    python finetune/run_ner.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/msra_ner/train.tsv --dev_path datasets/msra_ner/dev.tsv \\
        --test_path datasets/msra_ner/test.tsv --label2id_path datasets/msra_ner/label2id.json \\
        --epochs_num 5 --batch_size 16 [--crf_target]
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.ner import finetune_main as main

if __name__ == "__main__":
    run(main)
