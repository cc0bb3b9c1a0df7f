"""Answer the questions of a CMRC2018 JSON file with a model from finetune/run_cmrc.py; writes {id: answer}.

    python inference/run_cmrc_infer.py --load_model_path models/cmrc_model.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --test_path datasets/cmrc2018/test.json --prediction_path datasets/cmrc2018/prediction.json \\
        --seq_length 512
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.cmrc import infer_main as main

if __name__ == "__main__":
    run(main)
