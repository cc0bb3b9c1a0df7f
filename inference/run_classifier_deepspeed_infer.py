"""Predict labels with a model from run_classifier_deepspeed.py, the examples split across the processes.

    deepspeed --num_gpus 2 inference/run_classifier_deepspeed_infer.py --world_size 2 \\
        --load_model_path models/classifier_model.bin --vocab_path models/google_zh_vocab.txt \\
        --config_path models/bert/base_config.json --test_path datasets/chnsenticorp/test_nolabel.tsv \\
        --prediction_path prediction.tsv --labels_num 2 --output_logits --output_prob
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.classifier_deepspeed import infer_main as main

if __name__ == "__main__":
    run(main)
