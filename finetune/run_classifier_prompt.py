"""Fine-tune a pretrained masked language model to classify by filling a prompt's [MASK] with an answer word
(``--prompt_path`` models/prompts.json, ``--prompt_id``); data: ``label<TAB>text_a[<TAB>text_b]``.

    python finetune/run_classifier_prompt.py --pretrained_model_path models/bert_base.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --train_path datasets/chnsenticorp/train.tsv --dev_path datasets/chnsenticorp/dev.tsv \\
        --test_path datasets/chnsenticorp/test.tsv --prompt_id chnsenticorp_char --epochs_num 3
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.prompt import finetune_main as main

if __name__ == "__main__":
    run(main)
