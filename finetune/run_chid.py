"""Fine-tune a pretrained model on ChID (idiom cloze: JSON lines plus a JSON answer file).

    python finetune/run_chid.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/chid/train.json --train_answer_path datasets/chid/train_answer.json \\
        --dev_path datasets/chid/dev.json --dev_answer_path datasets/chid/dev_answer.json \\
        --output_model_path models/multichoice_model.bin --epochs_num 3 --batch_size 64 --seq_length 64 \\
        --max_choices_num 10
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.multiple_choice import chid_finetune_main as main

if __name__ == "__main__":
    run(main)
