"""Train SimCSE sentence embeddings (unsupervised: a ``text_a`` column; supervised: ``label<TAB>text_a<TAB>text_b``
positive pairs); the dev set (``label<TAB>text_a<TAB>text_b`` similarity scores) is scored by Spearman's
correlation with the cosine similarities.

    python finetune/run_simcse.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/ChineseTextualInference/train.tsv --dev_path datasets/STS-B/dev.tsv \\
        --learning_rate 1e-5 --epochs_num 1 --batch_size 64 --seq_length 64 --pooling first \\
        --temperature 0.05 --eval_steps 1000
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.simcse import finetune_main as main

if __name__ == "__main__":
    run(main)
