"""Fill the blanks of a ChID file with a model from finetune/run_chid.py; writes {blank: candidate index}.

    python inference/run_chid_infer.py --load_model_path models/multichoice_model.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --test_path datasets/chid/test.json --prediction_path datasets/chid/prediction.json \\
        --seq_length 64 --max_choices_num 10
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.multiple_choice import chid_infer_main as main

if __name__ == "__main__":
    run(main)
