"""Predict the labels of a TSV (header ``text_a[<TAB>text_b]``) with a model from
finetune/run_classifier_prompt.py (same --prompt_path / --prompt_id).

    python inference/run_classifier_prompt_infer.py --load_model_path models/finetuned_model.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --test_path datasets/chnsenticorp/test_nolabel.tsv --prediction_path prediction.tsv \\
        --prompt_id chnsenticorp_char --output_logits --output_prob
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.prompt import infer_main as main

if __name__ == "__main__":
    run(main)
