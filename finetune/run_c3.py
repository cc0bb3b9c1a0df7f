"""Fine-tune a pretrained model on C3 (multiple-choice reading comprehension, JSON).

    python finetune/run_c3.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/c3/train.json --dev_path datasets/c3/dev.json \\
        --output_model_path models/multichoice_model.bin --epochs_num 8 --batch_size 8 --seq_length 512 \\
        --max_choices_num 4
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.multiple_choice import c3_finetune_main as main

if __name__ == "__main__":
    run(main)
