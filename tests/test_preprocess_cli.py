"""preprocess.py: the flag surface (frozen), --key=value, end to end, errors as exit status 2 (run() harness)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tencentpretrain.data.dataset import IndexedDataset
from tencentpretrain.errors import TencentPretrainError

ROOT = Path(__file__).resolve().parents[1]
SPM = str(ROOT / "tests" / "assets" / "tiny_spm.model")


def _preprocess():
    spec = importlib.util.spec_from_file_location("preprocess", ROOT / "preprocess.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flag_surface_is_frozen():
    flags = {s for a in _preprocess().build_parser()._actions for s in a.option_strings}
    assert flags == {
        "-h", "--help", "--corpus_path", "--dataset_path", "--data_processor", "--seq_length", "--processes_num",
        "--json_format_corpus", "--full_sentences", "--seed", "--prompt_template", "--train_on_prompt",
        "--skip_bad_lines", "--tokenizer", "--spm_model_path", "--vocab_path", "--do_lower_case",
        # bert/albert/mlm/t5/vit (issue 9), the original's names
        "--dup_factor", "--short_seq_prob", "--dynamic_masking", "--whole_word_masking", "--tgt_seq_length",
        "--image_height", "--image_width", "--channels_num",
        "--span_masking", "--span_geo_prob", "--span_max_length",
        "--docs_buffer_size",  # the original's; no effect here
        # gsg and mt (issue 16), the original's names
        "--sentence_selection_strategy", "--tgt_tokenizer", "--tgt_vocab_path", "--tgt_merges_path",
        "--tgt_spm_model_path", "--tgt_do_lower_case", "--merges_path",
    }


def test_original_command_line_works(tmp_path):
    corpus = tmp_path / "sft.jsonl"
    rows = [{"instruction": "你好", "input": "", "output": "你好！"}, {"instruction": "再见", "output": "再见。"}]
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "dataset.pt"
    argv = [f"--corpus_path={corpus}", "--spm_model_path", SPM, "--dataset_path", str(out),
            "--data_processor=llm_sft", "--seq_length", "32", "--processes_num=2"]
    assert _preprocess().main(argv) == 0
    ds = IndexedDataset(out)
    assert len(ds) == 2 and ds.processor == "alpaca" and ds.seq_length == 32


def test_user_errors_raise_and_bad_flags_exit_2(tmp_path, capsys):
    with pytest.raises(TencentPretrainError, match="missing.txt: corpus file not found"):
        _preprocess().main(["--corpus_path", str(tmp_path / "missing.txt"), "--spm_model_path", SPM])
    with pytest.raises(SystemExit) as exit_info:
        _preprocess().main(["--corpus_path", "x", "--data_processor", "nonexistent"])  # not a registered processor
    assert exit_info.value.code == 2
    assert "argument --data_processor: invalid choice: 'nonexistent'" in capsys.readouterr().err


@pytest.mark.slow
def test_user_errors_exit_2_with_one_line(tmp_path):
    """The script itself (through the run() harness): status 2, one ``error:`` line, no traceback."""
    argv = ["--corpus_path", str(tmp_path / "missing.txt"), "--spm_model_path", SPM]
    proc = subprocess.run([sys.executable, str(ROOT / "preprocess.py"), *argv], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    missing = tmp_path / "missing.txt"
    assert proc.stderr.splitlines() == [f"preprocess.py: error: {missing}: corpus file not found (--corpus_path)"]
    assert not (tmp_path / "dataset.pt").exists()


def test_dataset_path_naming_the_corpus_is_refused(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("你好\n再见\n", encoding="utf-8")
    with pytest.raises(TencentPretrainError, match="is a file, not a dataset directory"):
        _preprocess().main(["--corpus_path", str(corpus), "--spm_model_path", SPM, "--dataset_path", str(corpus)])
    assert corpus.read_text(encoding="utf-8") == "你好\n再见\n"
