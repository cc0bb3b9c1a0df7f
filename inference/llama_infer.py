"""Batch-file inference: every line of --test_path is a prompt; prompt + completion go to --prediction_path.

Lines are used as they are (with their newline), as llama_inference did; with --prompt_template each line is a
user message in that chat template, as instruction tuning rendered it.

    python inference/llama_infer.py --load_model_path model.bin --config_path models/llama/7b_config.json \\
        --spm_model_path tokenizer.model --test_path prompts.txt --prediction_path out.txt --batch_size 8
"""

from __future__ import annotations

from tencentpretrain.cli import run
from tencentpretrain.generation.batch_file import run_batch_file, write_llama_infer


def main(argv: list[str] | None = None) -> None:
    run_batch_file(argv, description=__doc__, keep_newline=True, write=write_llama_infer)


if __name__ == "__main__":
    run(main)
