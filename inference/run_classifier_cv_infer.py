"""Average the class probabilities of the fold models of run_classifier_cv.py on a TSV (for stacking).

    python inference/run_classifier_cv_infer.py --load_model_path models/classifier_model.bin \\
        --vocab_path models/google_zh_vocab.txt --config_path models/bert/base_config.json \\
        --test_path datasets/chnsenticorp/test_nolabel.tsv \\
        --test_features_path datasets/chnsenticorp/test_features.npy --folds_num 5 --labels_num 2
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.classifier_cv import infer_main as main

if __name__ == "__main__":
    run(main)
