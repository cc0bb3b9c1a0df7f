"""Generation reports: prompts through several systems into Markdown and JSONL."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager

import pytest
import torch

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.config import save_model_config
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.evaluation.common import ModelSpec
from tencentpretrain.evaluation.generation_report import (
    SystemConfig,
    generate_report,
    markdown_cell,
    markdown_report,
    model_generator,
    parse_system_flag,
    read_prompts,
    read_systems_file,
)
from tencentpretrain.models.model import build_model
from tencentpretrain.tokenizers import build_tokenizer
from tencentpretrain.tokenizers.templates import get_template, render_prompt
from tests.helpers import REPO_ROOT, tiny_llama_config

SPM = f"{REPO_ROOT}/tests/assets/tiny_spm.model"
PROMPTS = [
    {"prompt": "中国的首都是哪里？", "category": "常识推理"},
    {"instruction": "把下面的句子翻译成英文", "input": "我爱北京", "category": "文本翻译", "output": "I love Beijing"},
    {"prompt": "1 + 1 | 2 = ?", "category": "常识推理"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("sentencepiece", spm_model_path=SPM)


def greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """The simplest possible greedy loop (full recompute, no cache): the test's reference."""
    ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model.logits(torch.tensor([ids + out]))[0, -1].argmax())
            if token == tokenizer.eos_id:
                break
            out.append(token)
    return tokenizer.decode(out)


def write_prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PROMPTS), encoding="utf-8")
    return str(path)


def test_report_runs_every_system_with_its_own_template(tmp_path, tokenizer):
    models = {}
    for seed, name in ((1, "base"), (2, "sft")):
        torch.manual_seed(seed)
        models[name] = build_model(tiny_llama_config(), tokenizer.vocab_size).eval()
    systems = [
        SystemConfig(name="base", max_new_tokens=6),
        SystemConfig(name="sft", template="alpaca", max_new_tokens=4),
    ]

    @contextmanager
    def factory(system):
        model = models[system.name]
        yield lambda prompts: [greedy(model, tokenizer, p, system.max_new_tokens) for p in prompts]

    items = read_prompts(write_prompts(tmp_path))
    records = generate_report(items, systems, batch_size=2, factory=factory)
    assert [r["id"] for r in records] == ["0", "1", "2"] and records[1]["input"] == "我爱北京"
    for item, record in zip(items, records, strict=True):
        plain = render_prompt(get_template("plain"), item.instruction, item.input)
        alpaca = render_prompt(get_template("alpaca"), item.instruction, item.input)
        assert record["outputs"] == {
            "base": greedy(models["base"], tokenizer, plain, 6),
            "sft": greedy(models["sft"], tokenizer, alpaca, 4),
        }
    assert records[0]["outputs"]["base"] != records[0]["outputs"]["sft"]
    text = markdown_report(records, systems, title="demo")
    lines = text.splitlines()
    assert lines[0] == "# demo" and "## 常识推理" in lines and "## 文本翻译" in lines
    assert lines.index("## 常识推理") < lines.index("## 文本翻译")
    assert "| # | prompt | reference | base | sft |" in lines
    row = next(line for line in lines if line.startswith("| 2 |"))
    assert row.startswith("| 2 | 1 + 1 \\| 2 = ? | ")
    assert len(re.findall(r"(?<!\\)\|", row)) == 6  # 5 cells: the escaped pipe does not open one
    assert row.startswith("| 2 | 1 + 1 \\| 2 = ? |   | ")  # no reference for this prompt
    assert "| 1 | 把下面的句子翻译成英文<br>我爱北京 | I love Beijing |" in text
    assert records[1]["reference"] == "I love Beijing" and records[0]["reference"] == ""
    assert "| sft | (random init) | alpaca | 4 | 0.0 | 0 | 1.0 | 1.0 | 0 |" in text


def test_real_generate_greedy_equals_the_reference_loop(tmp_path, tokenizer):
    torch.manual_seed(4)
    config = tiny_llama_config()
    model = build_model(config, tokenizer.vocab_size).eval()
    save_model_config(config, tmp_path / "config.json")
    save_checkpoint(model, str(tmp_path / "model.bin"))
    spec = ModelSpec(config_path=str(tmp_path / "config.json"), load_model_path=str(tmp_path / "model.bin"),
                     spm_model_path=SPM, device="cpu")
    system = SystemConfig(name="tiny", model=spec, max_new_tokens=8)
    prompts = ["中国的首都是", "Hello", "自然语言处理是人工智能的一个重要方向"]
    with model_generator(system, batch_size=2) as generator:
        got = generator(prompts)
    assert got == [greedy(model, tokenizer, p, 8) for p in prompts]


def test_system_flags_and_files(tmp_path):
    spec = ModelSpec(spm_model_path="tok.model", config_path="c.json")
    defaults = SystemConfig(name="", model=spec, max_new_tokens=64)
    system = parse_system_flag("name=7B,load_model_path=/m/7b.bin,template=alpaca,temperature=0.7,top_k=40,"
                               "seed=none,stop_strings=User:|\nBot", defaults)
    assert system.name == "7B" and system.model.load_model_path == "/m/7b.bin"
    assert system.model.spm_model_path == "tok.model" and system.max_new_tokens == 64
    assert (system.template, system.temperature, system.top_k, system.seed) == ("alpaca", 0.7, 40, None)
    assert system.stop_strings == ("User:", "\nBot")
    assert parse_system_flag("load_model_path=/ckpt/llama_zh_7b.bin", defaults).name == "llama_zh_7b.bin"
    with pytest.raises(ConfigError, match="unknown key.*temprature"):
        parse_system_flag("temprature=1", defaults)
    with pytest.raises(ConfigError, match="not a number"):
        parse_system_flag("top_p=high", defaults)
    path = tmp_path / "systems.json"
    path.write_text(json.dumps([{"name": "a", "top_p": 0.9}, {"name": "b", "stop_strings": ["</s>"]}]))
    a, b = read_systems_file(str(path), defaults)
    assert a.top_p == 0.9 and b.stop_strings == ("</s>",) and b.model.config_path == "c.json"
    with pytest.raises(ConfigError, match="unique"):
        generate_report(read_prompts_from([("x",)], tmp_path), [a, a], factory=None)


def read_prompts_from(rows, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n".join(r[0] for r in rows) + "\n", encoding="utf-8")
    return read_prompts(str(path))


def test_prompt_files(tmp_path):
    items = read_prompts_from([("第一个问题",), ("second",)], tmp_path)
    assert [(i.id, i.instruction, i.category) for i in items] == [("0", "第一个问题", ""), ("1", "second", "")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"question": "no prompt"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        read_prompts(str(bad))


def test_markdown_cell():
    assert markdown_cell("a|b\nc\r\nd ") == "a\\|b<br>c<br>d"
    assert markdown_cell("") == " "
    assert markdown_cell("x\x17y\tz") == "x\\u0017y z"
