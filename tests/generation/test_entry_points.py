"""inference/llama_infer.py, scripts/generate_lm.py and the dialogue REPL, end to end on a saved tiny model."""

from __future__ import annotations

import importlib.util
import io
import os

import pytest

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.config import save_model_config
from tencentpretrain.errors import ConfigError
from tencentpretrain.generation import Engine, GenerationConfig, generate
from tencentpretrain.generation.batch_file import generate_file, write_generate_lm
from tencentpretrain.generation.chat import chat_prompt_ids
from tencentpretrain.generation.repl import NEW_CHAT, Dialogue, DialogueConfig, run_repl
from tencentpretrain.tokenizers.templates import get_template
from tests.generation.scripted import SPM_PATH, scripted_model, tiny_model, tiny_tokenizer
from tests.helpers import REPO_ROOT, tiny_llama_config


def load_script(relative):
    spec = importlib.util.spec_from_file_location("entry", os.path.join(REPO_ROOT, relative))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def saved(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size)
    save_checkpoint(model, str(tmp_path / "model.bin"))
    save_model_config(tiny_llama_config(), tmp_path / "config.json")
    (tmp_path / "prompts.txt").write_text("北京是\n今天天气\nhello\n", encoding="utf-8")
    return tmp_path, model, tok


def flags(tmp_path, *extra):
    return ["--load_model_path", str(tmp_path / "model.bin"), "--config_path", str(tmp_path / "config.json"),
            "--spm_model_path", SPM_PATH, "--test_path", str(tmp_path / "prompts.txt"),
            "--prediction_path", str(tmp_path / "out.txt"), *extra]


def test_llama_infer_writes_prompt_and_completion_for_every_line_in_batches(saved):
    tmp_path, model, tok = saved
    load_script("inference/llama_infer.py").main(
        flags(tmp_path, "--batch_size=2", "--temperature", "0", "--repetition_penalty", "1", "--max_new_tokens", "8"))
    prompts = ["北京是\n", "今天天气\n", "hello\n"]
    expected = generate(model, tok, prompts, GenerationConfig(max_new_tokens=8))
    out = (tmp_path / "out.txt").read_text(encoding="utf-8")
    # As llama_inference: the decode of the whole row (a completion's leading "▁" shows as a space)
    assert out == "".join(tok.decode(c.prompt_ids + c.token_ids) + "\n\n" for c in expected)


def test_llama_infer_prompt_template_renders_each_line_as_a_user_turn(saved):
    """--prompt_template must change the prompt (it was once accepted and ignored)."""
    tmp_path, model, tok = saved
    load_script("inference/llama_infer.py").main(
        flags(tmp_path, "--prompt_template", "user_bot", "--temperature", "0", "--repetition_penalty", "1",
              "--max_new_tokens", "8"))
    template = get_template("user_bot")
    prompts = ["北京是\n", "今天天气\n", "hello\n"]
    ids = [chat_prompt_ids(tok, template, [{"role": "user", "content": p.strip()}]) for p in prompts]
    expected = generate(model, tok, ids, GenerationConfig(max_new_tokens=8, stop_strings=("User:",)))
    out = (tmp_path / "out.txt").read_text(encoding="utf-8")
    assert out == "".join(p + c.text + "\n\n" for p, c in zip(prompts, expected))
    raw = generate(model, tok, prompts, GenerationConfig(max_new_tokens=8))
    assert [c.token_ids for c in expected] != [c.token_ids for c in raw]


def test_generate_lm_seq_length_is_the_total_length(saved):
    """prompt + output == --seq_length tokens, as in the original (it once reached seq_length + 1)."""
    tmp_path, model, tok = saved
    load_script("scripts/generate_lm.py").main(flags(tmp_path, "--seq_length", "12", "--temperature=0"))
    out = (tmp_path / "out.txt").read_text(encoding="utf-8")
    first = out.split("\n\n")[0]
    line, full = first.split("\n", 1)
    assert line == "北京是" and full.startswith("北京是")
    prompt_ids = [tok.bos_id] + tok.encode("北京是")
    expected = generate(model, tok, [prompt_ids], GenerationConfig(max_new_tokens=12 - len(prompt_ids)),
                        max_length=12)[0]
    assert expected.finish_reason == "length"  # no eos: the row fills the budget
    assert len(prompt_ids) + len(expected.token_ids) == 12
    assert full == "北京是" + expected.text


def test_batch_file_rows_fill_seq_length_exactly(saved):
    _, model, tok = saved
    prompts = ["北京是", "今天天气很好，我们去公园", "hello"]
    ids = [[tok.bos_id] + tok.encode(p) for p in prompts]
    seq_length = len(ids[1])  # the second prompt is full already: an empty completion, as the original's 0 steps
    config = GenerationConfig(max_new_tokens=seq_length, stop_at_eos=False)
    completions = generate_file(model, tok, prompts, config, batch_size=2, seq_length=seq_length)
    assert [len(c.prompt_ids) + len(c.token_ids) for c in completions] == [seq_length] * 3
    assert completions[1].text == "" and completions[1].finish_reason == "length"
    alone = generate(model, tok, [ids[0]], GenerationConfig(max_new_tokens=seq_length - len(ids[0]),
                                                            stop_at_eos=False))[0]
    assert completions[0].token_ids == alone.token_ids
    # --max_new_tokens below the room left still caps the output
    capped = generate_file(model, tok, prompts, GenerationConfig(max_new_tokens=2, stop_at_eos=False),
                           batch_size=2, seq_length=seq_length)
    assert [len(c.token_ids) for c in capped] == [2, 0, 2]
    too_long = f"prompt 2 .* has {seq_length} tokens, more than --seq_length {seq_length - 1}"
    with pytest.raises(ConfigError, match=too_long):
        generate_file(model, tok, prompts, config, batch_size=2, seq_length=seq_length - 1)


def test_dialogue_repl_streams_keeps_history_and_clears(saved):
    _, model, tok = saved
    engine = Engine(model, tok, max_batch_size=1, max_length=256)
    dialogue = Dialogue(engine, tok, get_template("user_bot"), GenerationConfig(max_new_tokens=6),
                        DialogueConfig(seq_length=256))
    inputs = iter(["你好", "北京呢", "clear", "再见", "exit"])
    out = io.StringIO()
    run_repl(dialogue, read=lambda _: next(inputs), out=out)
    text = out.getvalue()
    assert text.count(NEW_CHAT) == 2 and text.count("ChatLLaMa: ") == 3
    assert [m["role"] for m in dialogue.messages] == ["user", "assistant"]  # cleared before "再见"
    assert dialogue.messages[0]["content"] == "再见"


def test_batch_file_text_keeps_the_space_after_the_prompt(tmp_path):
    """The original wrote the decode of the whole row: a completion whose first piece is "▁" + text shows its
    space after the prompt, though SentencePiece drops it when the completion is decoded alone."""
    tok = tiny_tokenizer()
    prompt = "北京是"
    script = tok.encode("好的") + [tok.eos_id]  # "▁", "好", "的"
    assert tok.id_to_piece(script[0]) == "\u2581" and tok.decode(script[:-1]) == "好的"
    model = scripted_model(tok.vocab_size, script, len([tok.bos_id] + tok.encode(prompt)))
    [completion] = generate_file(model, tok, [prompt], GenerationConfig(max_new_tokens=8), batch_size=1,
                                 seq_length=64)
    assert completion.text == " 好的"
    write_generate_lm(str(tmp_path / "out.txt"), [prompt], [completion])
    full = tok.decode([tok.bos_id] + tok.encode(prompt) + script[:-1])
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == prompt + "\n" + full == "北京是\n北京是 好的"
    # A chat answer (with a template) keeps the text without the template's space.
    [answer] = generate_file(scripted_model(tok.vocab_size, script, len(chat_prompt_ids(
        tok, get_template("user_bot"), [{"role": "user", "content": prompt}]))), tok, [prompt],
        GenerationConfig(max_new_tokens=8), batch_size=1, seq_length=64, template=get_template("user_bot"))
    assert answer.text == "好的"
