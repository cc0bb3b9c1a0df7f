"""Tag a TSV (header ``text_a``, space-separated tokens) with a model from finetune/run_ner.py; writes the
header ``pred_label`` and one line of space-separated tags per input.

    python inference/run_ner_infer.py --load_model_path models/finetuned_model.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --test_path datasets/msra_ner/test_nolabel.tsv --prediction_path prediction.tsv \\
        --label2id_path datasets/msra_ner/label2id.json [--crf_target]
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.ner import infer_main as main

if __name__ == "__main__":
    run(main)
