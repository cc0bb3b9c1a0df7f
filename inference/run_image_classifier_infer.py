"""Predict the labels of the images listed in a TSV (column ``path``) with a model from run_image_classifier.py.

    python inference/run_image_classifier_infer.py --load_model_path models/finetuned_model.bin \\
        --config_path models/vit/base-16-224_config.json --labels_num 10 \\
        --test_path datasets/cifar10/test_nolabel.tsv --prediction_path datasets/cifar10/prediction.tsv
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.image_classifier import infer_main as main

if __name__ == "__main__":
    run(main)
