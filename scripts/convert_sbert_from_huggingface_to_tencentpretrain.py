"""Convert a sentence-transformers BERT directory (BertModel + 1_Pooling) into the original's SBERT checkpoint
(two tied streams: embedding.dual.*, encoder.encoder_{0,1}.*) for finetune/run_classifier_siamese.py, strict.
A bare pytorch_model.bin (the original's input) is accepted too. The JSON config (pooling included) is written
beside the output (x.bin -> x_config.json) unless --output_config_path says where."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import hf_to_tencentpretrain_main


def main(argv: Sequence[str] | None = None) -> int:
    return hf_to_tencentpretrain_main("sbert", argv, __doc__, head="BertModel")


if __name__ == "__main__":
    run(main)
