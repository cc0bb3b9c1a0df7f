"""Predict the labels of a TSV (header ``text_a<TAB>text_b``) with a model from finetune/run_classifier_siamese.py.

    python inference/run_classifier_siamese_infer.py --load_model_path models/finetuned_model.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/sbert/base_config.json \\
        --test_path datasets/lcqmc/test_nolabel.tsv --prediction_path prediction.tsv \\
        --labels_num 2 --output_logits --output_prob
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.siamese import infer_main as main

if __name__ == "__main__":
    run(main)
