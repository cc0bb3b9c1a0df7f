"""Generate the target text of every line of a TSV (column ``text_a``) with a model fine-tuned by run_text2text.py.

    python inference/run_text2text_infer.py --load_model_path models/finetuned_model.bin \\
        --vocab_path models/google_zh_with_sentinel_vocab.txt --config_path models/t5/small_config.json \\
        --test_path datasets/text2text/test_nolabel.tsv --prediction_path datasets/text2text/prediction.tsv \\
        --seq_length 128 --tgt_seq_length 32
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.text2text import infer_main as main

if __name__ == "__main__":
    run(main)
