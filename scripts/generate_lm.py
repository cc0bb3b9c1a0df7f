"""TencentPretrain's generate_lm.py: continue each line of --test_path (stripped) with the language model.

The output holds, per line, the line, a newline and the prompt + completion. --seq_length is the total length
(prompt + generated tokens), as in the original; sampling defaults are the original's (top_k 70, temperature 1).

    python scripts/generate_lm.py --load_model_path model.bin --config_path models/llama/7b_config.json \
        --spm_model_path tokenizer.model --test_path beginning.txt --prediction_path generated.txt --seq_length 128
"""

from __future__ import annotations

from tencentpretrain.cli import run
from tencentpretrain.generation.batch_file import run_batch_file, write_generate_lm

ORIGINAL_SAMPLING = {"top_k": 70, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.0}


def main(argv: list[str] | None = None) -> None:
    run_batch_file(argv, description=__doc__, keep_newline=False, write=write_generate_lm, defaults=ORIGINAL_SAMPLING)


if __name__ == "__main__":
    run(main)
