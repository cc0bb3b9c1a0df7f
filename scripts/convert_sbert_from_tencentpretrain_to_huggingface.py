"""Convert an SBERT checkpoint (the original's two-stream layout, tied streams) into a sentence-transformers
directory: BertModel weights + config.json, modules.json and 1_Pooling/config.json with the config's pooling."""

from collections.abc import Sequence

from tencentpretrain.cli import run
from tencentpretrain.convert.hf_scripts import tencentpretrain_to_hf_main


def main(argv: Sequence[str] | None = None) -> int:
    return tencentpretrain_to_hf_main("sbert", argv, __doc__, head="BertModel")


if __name__ == "__main__":
    run(main)
