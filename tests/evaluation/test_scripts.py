"""The three entry points end to end on a tiny checkpoint, and their frozen flag sets."""

from __future__ import annotations

import json
import runpy

import pytest
import torch

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.config import save_model_config
from tencentpretrain.evaluation.common import ModelSpec, load_model_and_tokenizer
from tencentpretrain.evaluation.perplexity import PerplexityConfig, evaluate_perplexity
from tencentpretrain.models.model import build_model
from tests.evaluation.test_multiple_choice import write_ceval
from tests.helpers import REPO_ROOT, tiny_llama_config

SPM = f"{REPO_ROOT}/tests/assets/tiny_spm.model"
MODEL_FLAGS = {"--config_path", "--load_model_path", "--lora_path", "--spm_model_path", "--tokenizer", "--vocab_path",
               "--merges_path",
               "--dtype", "--device", "-h", "--help"}


def script(name: str) -> dict:
    return runpy.run_path(f"{REPO_ROOT}/scripts/{name}.py", run_name="evaluation_test")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(11)
    config = tiny_llama_config(max_seq_length=256)
    save_model_config(config, root / "config.json")
    save_checkpoint(build_model(config, 700), str(root / "model.bin"))
    return ["--config_path", str(root / "config.json"), "--load_model_path", str(root / "model.bin"),
            "--spm_model_path", SPM, "--device", "cpu"]


def test_evaluate_ppl(tmp_path, checkpoint):
    corpus = tmp_path / "corpus.jsonl"
    texts = ["中国的首都是北京。", "Language models predict the next token.", "自然语言处理" * 20]
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "ppl.json"
    script("evaluate_ppl")["main"]([*checkpoint, "--corpus_path", str(corpus), "--seq_length", "32", "--stride", "16",
                                    "--batch_size", "2", "--output_path", str(out)])
    report = json.loads(out.read_text())
    model, tokenizer = load_model_and_tokenizer(ModelSpec(**dict(zip(
        ("config_path", "load_model_path", "spm_model_path", "device"), checkpoint[1::2], strict=True))))
    expected = evaluate_perplexity(model, tokenizer, texts, PerplexityConfig(seq_length=32, stride=16))
    assert report["tokens"] == expected.tokens and report["characters"] == sum(map(len, texts))
    assert report["perplexity"] == pytest.approx(expected.perplexity, rel=1e-5)
    assert report["settings"]["stride"] == 16


def test_evaluate_choice(tmp_path, checkpoint, capsys):
    data = write_ceval(tmp_path / "ceval")
    paths = {k: str(tmp_path / k) for k in ("report.json", "pred.jsonl")}
    report = script("evaluate_choice")["main"]([
        *checkpoint, "--data_dir", str(data), "--shots", "1", "--batch_size", "3",
        "--output_path", paths["report.json"], "--predictions_path", paths["pred.jsonl"],
    ])
    assert json.loads(open(paths["report.json"]).read())["overall"] == report["overall"]
    records = [json.loads(line) for line in open(paths["pred.jsonl"])]
    assert len(records) == 5 and {r["shots"] for r in records} == {1}
    assert report["overall"]["correct"] == sum(r["correct"] for r in records)
    assert "| Overall | 2 | 5 |" in capsys.readouterr().out


def test_evaluate_generation(tmp_path, checkpoint):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("中国的首都是\nHello\n", encoding="utf-8")
    md, jsonl = tmp_path / "r.md", tmp_path / "r.jsonl"
    script("evaluate_generation")["main"]([
        *checkpoint, "--prompts_path", str(prompts), "--max_new_tokens", "5",
        "--system", "name=greedy", "--system", "name=sampled,temperature=0.8,top_p=0.9,seed=3",
        "--output_path", str(md), "--jsonl_path", str(jsonl),
    ])
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [sorted(r["outputs"]) for r in records] == [["greedy", "sampled"]] * 2
    assert "| # | prompt | greedy | sampled |" in md.read_text()  # no reference column


@pytest.mark.parametrize("name,own", [
    ("evaluate_ppl", {"--corpus_path", "--corpus_format", "--text_key", "--seq_length", "--stride", "--batch_size",
                      "--add_bos", "--no-add_bos", "--add_eos", "--no-add_eos", "--output_path"}),
    ("evaluate_choice", {"--data_dir", "--split", "--benchmark", "--subjects", "--shots", "--batch_size",
                         "--max_length", "--reduce", "--template", "--header", "--add_bos", "--no-add_bos",
                         "--output_path", "--predictions_path", "--submission_path"}),
    ("evaluate_generation", {"--prompts_path", "--system", "--systems_file", "--template", "--max_new_tokens",
                             "--temperature", "--top_k", "--top_p", "--repetition_penalty", "--seed", "--batch_size",
                             "--title", "--output_path", "--jsonl_path"}),
])
def test_flag_surface_is_frozen(name, own):
    parser = script(name)["build_parser"]()
    flags = {s for action in parser._actions for s in action.option_strings}
    assert flags == MODEL_FLAGS | own
    assert all(action.help for action in parser._actions)


def test_evaluate_ppl_reads_an_hf_directory_with_its_tokenizer(tmp_path):
    """An HF directory (config.json, model.safetensors, tokenizer.model) needs no other flag, and gives the same
    numbers as the TencentPretrain checkpoint it was converted from."""
    import shutil

    from tencentpretrain.checkpoint import save_file
    from tencentpretrain.convert.families.llama import hf_config_from_model_config, llama_hf_weight_map

    torch.manual_seed(12)
    config = tiny_llama_config()
    model = build_model(config, 700).eval()
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps(hf_config_from_model_config(config, 700)))
    save_file(llama_hf_weight_map(config).to_external(model.state_dict()), str(hf_dir / "model.safetensors"))
    shutil.copy(SPM, hf_dir / "tokenizer.model")
    corpus = tmp_path / "c.txt"
    corpus.write_text("中国的首都是北京。\n自然语言处理\n", encoding="utf-8")
    report = script("evaluate_ppl")["main"](["--load_model_path", str(hf_dir), "--corpus_path", str(corpus),
                                             "--device", "cpu"])
    tokenizer = load_model_and_tokenizer(ModelSpec(load_model_path=str(hf_dir), device="cpu"))[1]
    expected = evaluate_perplexity(model, tokenizer, corpus.read_text().split(), PerplexityConfig(seq_length=128))
    assert report["tokens"] == expected.tokens
    assert report["perplexity"] == pytest.approx(expected.perplexity, rel=1e-5)
