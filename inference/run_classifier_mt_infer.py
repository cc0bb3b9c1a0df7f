"""Predict every task's label of a TSV (header ``text_a[<TAB>text_b]``) with a model from run_classifier_mt.py.

    python inference/run_classifier_mt_infer.py --load_model_path models/multitask_classifier_model.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --test_path datasets/test_nolabel.tsv --prediction_path prediction.tsv \\
        --labels_num_list 2 2 --output_logits --output_prob
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.classifier_mt import infer_main as main

if __name__ == "__main__":
    run(main)
