"""Fine-tune an encoder-decoder (T5, BART) on a text-to-text TSV (header ``text_a<TAB>label``, label = target text).

    python finetune/run_text2text.py --pretrained_model_path models/t5_small.bin \\
        --vocab_path models/google_zh_with_sentinel_vocab.txt --config_path models/t5/small_config.json \\
        --train_path datasets/text2text/train.tsv --dev_path datasets/text2text/dev.tsv \\
        --seq_length 128 --tgt_seq_length 32 --epochs_num 3 --batch_size 16
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.text2text import finetune_main as main

if __name__ == "__main__":
    run(main)
