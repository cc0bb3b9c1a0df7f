"""Convert a TencentPretrain BERT fine-tuned by finetune/run_ner.py into an HF BertForTokenClassification
directory (config.json with the labels + safetensors) that transformers' from_pretrained loads. The encoder's
sizes come from --config_path (or the config beside the input), the label count from the checkpoint's head."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import tencentpretrain_to_hf_main


def main(argv: Sequence[str] | None = None) -> int:
    return tencentpretrain_to_hf_main("bert", argv, __doc__, head="BertForTokenClassification")


if __name__ == "__main__":
    run(main)
