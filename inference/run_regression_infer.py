"""Predict the values of a TSV (header ``text_a[<TAB>text_b]``) with a model from finetune/run_regression.py.

    python inference/run_regression_infer.py --load_model_path models/finetuned_model.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --test_path datasets/stsb/test_nolabel.tsv --prediction_path prediction.tsv
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.regression import infer_main as main

if __name__ == "__main__":
    run(main)
