"""Predict the label sets of a TSV (header ``text_a[<TAB>text_b]``) with a model from
finetune/run_classifier_multi_label.py; the ``label`` column lists the ids with probability > 0.5.

    python inference/run_classifier_multi_label_infer.py --load_model_path models/finetuned_model.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --test_path datasets/toutiao/test_nolabel.tsv --prediction_path prediction.tsv \\
        --labels_num 15 --output_logits --output_prob
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.multi_label import infer_main as main

if __name__ == "__main__":
    run(main)
