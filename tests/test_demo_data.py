"""data/: the committed demo data is what scripts/make_demo_data.py writes, and every file is well-formed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
FILES = ("zh_corpus.txt", "instructions.jsonl", "conversations.jsonl", "demo_prompts.jsonl")


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_demo_data", ROOT / "scripts" / "make_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the classes are created
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _lines(name: str) -> list[str]:
    raw = (DATA / name).read_bytes()
    text = raw.decode("utf-8")  # strict: invalid UTF-8 fails here
    assert text.endswith("\n") and "\r" not in text, name
    lines = text[:-1].split("\n")
    assert all(line.strip() for line in lines), f"{name}: empty line"
    return lines


def _messages(conversation: dict) -> list[dict]:
    """OpenAI-style messages of either accepted conversation format."""
    if "messages" in conversation:
        return conversation["messages"]
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    return [{"role": roles[m["from"]], "content": m["value"]} for m in conversation["conversations"]]


def test_script_regenerates_the_committed_files_byte_for_byte(script, tmp_path):
    files = script.render_files()
    assert sorted(files) == sorted(FILES)
    for name, data in files.items():
        assert (DATA / name).read_bytes() == data, f"data/{name} is stale: run python scripts/make_demo_data.py"
    assert script.render_files() == files  # deterministic within a process too
    assert script.main(["--check"]) == 0
    assert script.main(["--output_dir", str(tmp_path)]) == 0
    assert all((tmp_path / name).read_bytes() == data for name, data in files.items())
    with open(tmp_path / "instructions.jsonl", "ab") as f:
        f.write(b'{"instruction": "x", "input": "", "output": "y"}\n')
    assert script.main(["--output_dir", str(tmp_path), "--check"]) == 1


def test_corpus_size_and_documents():
    lines = _lines("zh_corpus.txt")
    size = (DATA / "zh_corpus.txt").stat().st_size
    assert 300_000 <= size <= 600_000, size
    assert len(lines) > 1000 and len(set(lines)) == len(lines)
    cjk = sum("\u4e00" <= ch <= "\u9fff" for line in lines for ch in line)
    assert cjk / sum(map(len, lines)) > 0.75  # mostly Chinese
    assert sum((DATA / name).stat().st_size for name in FILES) < 1_500_000


def test_instructions_are_unified_records():
    records = [json.loads(line) for line in _lines("instructions.jsonl")]
    assert 300 <= len(records) <= 500
    for r in records:
        assert set(r) == {"instruction", "input", "output"}
        assert all(isinstance(v, str) for v in r.values()) and r["instruction"] and r["output"]
    keys = [(r["instruction"], r["input"]) for r in records]
    assert len(set(keys)) == len(keys), "the same question with two answers"
    with_input = sum(bool(r["input"]) for r in records)
    assert 50 <= with_input <= len(records) // 2
    assert sorted(len(r["output"]) for r in records)[len(records) // 2] <= 25  # mostly short answers


def test_conversations_alternate_user_and_assistant():
    conversations = [json.loads(line) for line in _lines("conversations.jsonl")]
    assert 100 <= len(conversations) <= 200
    exchanges = []
    for conversation in conversations:
        messages = _messages(conversation)
        if messages[0]["role"] == "system":
            messages = messages[1:]
        roles = [m["role"] for m in messages]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles, roles
        assert all(isinstance(m["content"], str) and m["content"] for m in messages)
        exchanges.append(len(roles) // 2)
    assert max(exchanges) <= 4 and sum(n >= 2 for n in exchanges) >= 0.9 * len(exchanges)


def test_demo_prompts_are_training_samples_and_in_the_corpus(script):
    prompts = [json.loads(line) for line in _lines("demo_prompts.jsonl")]
    assert [p["instruction"] for p in prompts] == list(script.DEMO_PROMPTS)
    instructions = [json.loads(line) for line in _lines("instructions.jsonl")]
    corpus = (DATA / "zh_corpus.txt").read_text(encoding="utf-8")
    for p in prompts:
        assert p in instructions and p["input"] == ""
        assert f"问：{p['instruction']}答：{p['output']}" in corpus  # pretraining saw the answer too


def test_every_generated_answer_appears_in_the_corpus():
    corpus = (DATA / "zh_corpus.txt").read_text(encoding="utf-8")
    records = [json.loads(line) for line in _lines("instructions.jsonl")]
    single_line = [r for r in records if "\n" not in r["output"] and "\\n" not in r["output"] + r["instruction"]]
    missing = [r for r in single_line if r["output"] not in corpus]
    assert not missing, missing[:3]


@pytest.mark.parametrize("n, text", [(0, "零"), (8, "八"), (10, "十"), (16, "十六"), (20, "二十"), (56, "五十六"),
                                     (100, "一百"), (105, "一百零五"), (110, "一百一十"), (1001, "一千零一")])
def test_zh_number(script, n, text):
    assert script.zh_number(n) == text


def test_zh_number_rejects_out_of_range(script):
    with pytest.raises(ValueError, match="0..9999"):
        script.zh_number(10000)
