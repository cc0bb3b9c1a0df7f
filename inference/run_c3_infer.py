"""Choose the answers of a C3 JSON file with a model from finetune/run_c3.py; writes {"id", "label"} lines.

    python inference/run_c3_infer.py --load_model_path models/multichoice_model.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --test_path datasets/c3/test.json --prediction_path datasets/c3/prediction.json \\
        --seq_length 512 --max_choices_num 4
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.multiple_choice import c3_infer_main as main

if __name__ == "__main__":
    run(main)
