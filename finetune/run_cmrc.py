"""Fine-tune a pretrained model for span-extraction reading comprehension on CMRC2018 (SQuAD-style) JSON.

    python finetune/run_cmrc.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/cmrc2018/train.json --dev_path datasets/cmrc2018/dev.json \\
        --output_model_path models/cmrc_model.bin --epochs_num 2 --batch_size 8 --seq_length 512
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.cmrc import finetune_main as main

if __name__ == "__main__":
    run(main)
