"""The command-line surface is frozen: every entry point accepts exactly the flags in tests/golden/cli_flags.json.

Users' scripts are full of TencentPretrain command lines, so a flag that disappears (or is renamed) by accident
breaks them. The test builds each entry point's real parser - by running the script as ``__main__`` and stopping it
at its first ``parse_known_args`` call, before any work is done - and compares the sorted option strings with the
golden file.

To change the flag surface on purpose (a new flag, a new entry point), regenerate the golden file and review the
diff in the commit:

    .venv/bin/python -m tests.test_cli_flags --update
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import runpy
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "cli_flags.json")
# Entry points that live inside the package and are run with ``python -m``.
PACKAGE_MAINS = ("tencentpretrain.demo",)


class _ParserBuilt(BaseException):
    """Raised at the first parse: carries the parser (a BaseException, so no harness turns it into an exit)."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def entry_points() -> list[str]:
    """Every user-facing entry point: repository-relative script paths and ``-m`` module names."""
    scripts = ["preprocess.py", "pretrain.py"]
    for folder in ("scripts", "inference", "finetune"):
        scripts += sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, folder, "*.py")))
    return scripts + list(PACKAGE_MAINS)


@contextmanager
def _stop_at_first_parse() -> Iterator[None]:
    original = argparse.ArgumentParser.parse_known_args

    def capture(self, args=None, namespace=None):
        raise _ParserBuilt(self)

    argparse.ArgumentParser.parse_known_args = capture
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_known_args = original


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Sorted option strings of ``parser``; positionals appear as ``<dest>``."""
    flags = set()
    for action in parser._actions:
        flags.update(action.option_strings or [f"<{action.dest}>"])
    return sorted(flags)


def flags_of(entry_point: str) -> list[str]:
    """The option strings of one entry point's parser, built exactly as running it would build it."""
    return option_strings(parser_of(entry_point))


def parser_of(entry_point: str) -> argparse.ArgumentParser:
    """The parser one entry point builds, stopped at its first parse."""
    saved_argv = sys.argv
    try:
        with _stop_at_first_parse():
            if entry_point.endswith(".py"):
                sys.argv = [entry_point]
                runpy.run_path(os.path.join(ROOT, entry_point), run_name="__main__")
            else:
                sys.argv = [entry_point]
                runpy.run_module(entry_point, run_name="__main__", alter_sys=False)
    except _ParserBuilt as built:
        return built.parser
    finally:
        sys.argv = saved_argv
    raise AssertionError(f"{entry_point} finished without parsing a command line")


def current_flags() -> dict[str, list[str]]:
    return {name: flags_of(name) for name in entry_points()}


def read_golden() -> dict[str, list[str]]:
    with open(GOLDEN, encoding="utf-8") as f:
        return json.load(f)


def test_entry_points_are_the_golden_ones():
    assert entry_points() == list(read_golden()), "an entry point was added or removed: run --update and review"


@pytest.mark.parametrize("entry_point", entry_points())
def test_flags_are_frozen(entry_point):
    golden = read_golden().get(entry_point)
    assert golden is not None, f"{entry_point} is not in {GOLDEN}: run `python -m tests.test_cli_flags --update`"
    current = flags_of(entry_point)
    missing = sorted(set(golden) - set(current))
    added = sorted(set(current) - set(golden))
    assert not missing and not added, f"{entry_point}: flags removed {missing}, flags added {added}"


@pytest.mark.parametrize("entry_point", entry_points())
def test_help_renders(entry_point):
    """``--help`` formats (a stray % in a help text, or a bad default, would only fail when a user asks)."""
    text = parser_of(entry_point).format_help()
    assert text.startswith("usage: ") and "--help" in text


def test_capture_sees_a_real_parser():
    """The capture is not vacuous: pretrain.py has the original's core flags, and the golden file is not empty."""
    flags = flags_of("pretrain.py")
    for flag in ("--config_path", "--total_steps", "--deepspeed_config", "--embedding", "--no-tie_weights"):
        assert flag in flags
    assert sum(len(v) for v in read_golden().values()) > 500


# The original TencentPretrain's flags (shared/reference/tencentpretrain.md, sections 3.1, 4.1 and 5.1). Each must be
# accepted by our entry point of the same name, except the few listed in NOT_ACCEPTED with the reason.
ORIGINAL_FLAGS = {
    "preprocess.py": """--corpus_path --dataset_path --json_format_corpus --tokenizer --vocab_path --merges_path
        --spm_model_path --do_lower_case --vqgan_model_path --vqgan_config_path --tgt_tokenizer --tgt_vocab_path
        --tgt_merges_path --tgt_spm_model_path --tgt_do_lower_case --processes_num --data_processor
        --docs_buffer_size --seq_length --tgt_seq_length --dup_factor --short_seq_prob --full_sentences --seed
        --dynamic_masking --whole_word_masking --span_masking --span_geo_prob --span_max_length
        --sentence_selection_strategy""",
    "pretrain.py": """--dataset_path --pretrained_model_path --output_model_path --config_path --total_steps
        --save_checkpoint_steps --report_steps --accumulation_steps --batch_size --instances_buffer_size
        --labels_num --dropout --seed --tokenizer --spm_model_path --vocab_path --do_lower_case
        --tensor_model_parallel_size --pipeline_model_parallel_size --virtual_pipeline_model_parallel_size
        --distribute_checkpointed_activations --data_processor --deep_init --whole_word_masking --span_masking
        --span_geo_prob --span_max_length --learning_rate --warmup --lr_decay --optimizer --scheduler --world_size
        --gpu_ranks --master_ip --backend --deepspeed --enable_zero3 --deepspeed_config
        --deepspeed_checkpoint_activations --deepspeed_checkpoint_layers_num --resume_from_checkpoint --local_rank
        --global_rank --use_lora --lora_pretrained_model_path --lora_r --lora_alpha --lora_dropout --log_path
        --log_level --log_file_level --tgt_tokenizer --tgt_vocab_path --tgt_merges_path --tgt_spm_model_path
        --tgt_do_lower_case""",
    "scripts/generate_lm.py": """--load_model_path --test_path --prediction_path --config_path --batch_size
        --seq_length --top_k --top_p --temperature --spm_model_path --tokenizer --vocab_path""",
    # The original's small scripts (its scripts/*.py argparse calls; model_opts' architecture flags are left out:
    # our scripts read the architecture from --config_path).
    "scripts/average_models.py": "--model_list_path --output_model_path",
    "scripts/diff_vocab.py": "--vocab_1 --vocab_2",
    "scripts/dynamic_vocab_adapter.py": "--old_model_path --old_vocab_path --new_vocab_path --new_model_path",
    "scripts/extract_embeddings.py": "--load_model_path --vocab_path --spm_model_path --word_embedding_path",
    "scripts/topn_words_indep.py": "--load_model_path --vocab_path --spm_model_path --test_path --topn",
    "scripts/topn_words_dep.py": """--load_model_path --cand_vocab_path --test_path --config_path --batch_size
        --seq_length --topn --tokenizer --vocab_path --merges_path --spm_model_path""",
    "scripts/extract_features.py": """--load_model_path --test_path --prediction_path --config_path --batch_size
        --seq_length --pooling --whitening_size --tokenizer --vocab_path --merges_path --spm_model_path""",
    "scripts/cloze_test.py": """--load_model_path --test_path --prediction_path --config_path --batch_size
        --seq_length --topn --tokenizer --vocab_path --merges_path --spm_model_path""",
    # The original's family converters (checked against the checkpoint's config here, see convert/hf_scripts.py).
    **{f"scripts/convert_{family}_{direction}.py": f"--input_model_path --output_model_path {extra}"
       for family, extra in (("bert", "--layers_num --type"), ("gpt2", "--layers_num"), ("vit", "--layers_num"),
                             ("t5", "--layers_num --decoder_layers_num --type"))
       for direction in ("from_huggingface_to_tencentpretrain", "from_tencentpretrain_to_huggingface")},
    "scripts/convert_llama_from_huggingface_to_tencentpretrain.py": "--input_model_path --output_model_path --type",
}
# Flags of features that are not implemented: accepting them would silently ignore what the user asked for.
NOT_ACCEPTED = {
    "preprocess.py": {
        "--vqgan_model_path": "image tokenizers (VQGAN) are not implemented",
        "--vqgan_config_path": "image tokenizers (VQGAN) are not implemented",
    },
}


@pytest.mark.parametrize("entry_point", sorted(ORIGINAL_FLAGS))
def test_the_originals_flags_are_accepted(entry_point):
    original = set(ORIGINAL_FLAGS[entry_point].split())
    not_accepted = NOT_ACCEPTED.get(entry_point, {})
    ours = set(read_golden()[entry_point])
    assert sorted(original - ours - set(not_accepted)) == []
    assert sorted(set(not_accepted) & ours) == [], "now accepted: remove it from NOT_ACCEPTED"


def _update() -> None:
    flags = current_flags()
    tmp = f"{GOLDEN}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(flags, f, indent=1)
        f.write("\n")
    os.replace(tmp, GOLDEN)
    print(f"wrote {GOLDEN}: {len(flags)} entry points, {sum(len(v) for v in flags.values())} flags")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python -m tests.test_cli_flags --update")
    _update()
