"""The three entry points, chained as docs/vocabulary.md runs them (in-process, on the test corpora)."""

from __future__ import annotations

import json
import os
import runpy

import torch

from tencentpretrain.checkpoint import load_checkpoint, save_checkpoint
from tencentpretrain.models.model import build_model
from tests.helpers import REPO_ROOT, tiny_llama_config
from tests.vocab.helpers import ZH_CORPUS, write_base_corpus


def script(name: str):
    return runpy.run_path(os.path.join(REPO_ROOT, "scripts", name), run_name="vocab_test")["main"]


def test_build_merge_resize_from_the_command_line(tmp_path, capsys):
    d = str(tmp_path)
    base_corpus = write_base_corpus(os.path.join(d, "base.txt"))
    build = script("build_vocab.py")
    build(["--corpus_path", base_corpus, "--output_model_path", f"{d}/base.model", "--vocab_size", "600",
           "--character_coverage", "0.995", "--user_defined_symbols", "<sep>", "--control_symbols", "<ctrl>"])
    build(["--corpus_path", ZH_CORPUS, "--output_model_path", f"{d}/zh.model", "--vocab_size=1200"])
    assert os.path.isfile(f"{d}/zh.vocab") and len(open(f"{d}/zh.vocab", encoding="utf-8").readlines()) == 1200

    script("merge_tokenizers.py")([
        "--base_spm_model_path", f"{d}/base.model", "--extra_spm_model_path", f"{d}/zh.model",
        "--output_model_path", f"{d}/merged.model", "--zh_eval_path", ZH_CORPUS, "--report_path", f"{d}/report.json",
    ])
    report = json.load(open(f"{d}/report.json", encoding="utf-8"))
    assert report["merged_pieces"] == 600 + report["added"] and report["probe_changed"] == []
    assert report["zh_tokens_per_char_after"] < 0.4 * report["zh_tokens_per_char_before"]
    assert "Chinese tokens per character" in capsys.readouterr().out

    save_checkpoint(build_model(tiny_llama_config(), 600), f"{d}/model.bin")
    script("resize_vocab.py")([
        "--input_model_path", f"{d}/model.bin", "--output_model_path", f"{d}/model_zh.bin",
        "--base_spm_model_path", f"{d}/base.model", "--spm_model_path", f"{d}/merged.model",
    ])
    record = json.load(open(f"{d}/model_zh.bin.vocab_extension.json", encoding="utf-8"))
    assert record["original_vocab_size"] == 600 and record["vocab_size"] == report["merged_pieces"]
    model = build_model(tiny_llama_config(), report["merged_pieces"], init=False)
    load_checkpoint(model, f"{d}/model_zh.bin")
    assert torch.isfinite(model.embedding.word.embedding.weight).all()


def test_merge_can_fail_on_a_changed_probe(spms, tmp_path):
    probe = tmp_path / "probe.txt"
    probe.write_text("The GPU is fast.\n", encoding="utf-8")
    merge = script("merge_tokenizers.py")
    args = ["--base_spm_model_path", spms.base, "--extra_spm_model_path", spms.zh,
            "--output_model_path", str(tmp_path / "m.model"), "--probe_path", str(probe), "--fail_on_probe_change"]
    merge(args)  # default rules: the probe is untouched
    try:
        merge(args + ["--allow_ascii_alnum"])
    except SystemExit as e:
        assert e.code == 1
    else:
        raise AssertionError("expected exit status 1")
