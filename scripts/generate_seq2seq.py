"""TencentPretrain's generate_seq2seq.py: generate a target for each line of --test_path with an encoder-decoder
(BART, T5, Transformer MT, Pegasus ...).

The output holds, per line, the line, a newline and the target pieces (start token included), as in the original;
entries are separated by a blank line. Sampling defaults are the original's (top_k 70, temperature 1);
--temperature 0 decodes greedily, --beam_width N runs beam search.

    python scripts/generate_seq2seq.py --load_model_path models/bart.bin --config_path models/bart/base_config.json \
        --vocab_path models/google_zh_vocab.txt --test_path input.txt --prediction_path output.txt \
        --seq_length 128 --tgt_seq_length 64 --beam_width 4
"""

from __future__ import annotations

from tencentpretrain.cli import run
from tencentpretrain.generation.seq2seq_file import run_seq2seq_file


def main(argv: list[str] | None = None) -> None:
    run_seq2seq_file(argv, description=__doc__)


if __name__ == "__main__":
    run(main)
