"""Fine-tune a ViT on an image classification TSV (header ``label<TAB>path``, one image file per line).

    python finetune/run_image_classifier.py --pretrained_model_path models/vit_base_patch16_224.bin \\
        --config_path models/vit/base-16-224_config.json \\
        --train_path datasets/cifar10/train.tsv --dev_path datasets/cifar10/test.tsv \\
        --epochs_num 3 --batch_size 64
"""

from tencentpretrain.cli import run
from tencentpretrain.finetune.image_classifier import finetune_main as main

if __name__ == "__main__":
    run(main)
