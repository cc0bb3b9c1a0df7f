"""Fine-tune a classifier through DeepSpeed (one process per GPU; on CPU, gloo processes).

    deepspeed --num_gpus 2 finetune/run_classifier_deepspeed.py --world_size 2 \\
        --pretrained_model_path models/bert_base.bin --vocab_path models/google_zh_vocab.txt \\
        --config_path models/bert/base_config.json --deepspeed_config models/deepspeed_config.json \\
        --train_path datasets/chnsenticorp/train.tsv --dev_path datasets/chnsenticorp/dev.tsv \\
        --output_model_path models/classifier_model.bin --epochs_num 3 --batch_size 32
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.classifier_deepspeed import finetune_main as main

if __name__ == "__main__":
    run(main)
