"""Fine-tune a pretrained model for document-based question answering on a TSV with the header
``qid<TAB>label<TAB>text_a<TAB>text_b`` (question, candidate sentence); reports the mean reciprocal rank.

    python finetune/run_dbqa.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/nlpcc-dbqa/train.tsv --dev_path datasets/nlpcc-dbqa/dev.tsv \\
        --test_path datasets/nlpcc-dbqa/test.tsv --epochs_num 3 --batch_size 64 --seq_length 512
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.dbqa import finetune_main as main

if __name__ == "__main__":
    run(main)
