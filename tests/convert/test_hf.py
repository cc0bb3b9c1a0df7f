"""HF <-> TencentPretrain: bit-exact round trips, from_pretrained logits parity, the exported tokenizer."""

from __future__ import annotations

import json
import os

import pytest
import sentencepiece
import torch

from scripts import convert_llama_from_huggingface_to_tencentpretrain as hf_to_tp_script
from scripts import convert_llama_from_tencentpretrain_to_huggingface as tp_to_hf_script
from tencentpretrain.checkpoint import load_state_dict, save_file
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.hf import HfExportOptions, convert_hf_to_tencentpretrain, convert_tencentpretrain_to_hf
from tencentpretrain.convert.stream import HF_SAFETENSORS, ShardLayout, StateWriter
from tencentpretrain.errors import CheckpointError
from tencentpretrain.tokenizers.templates import get_template, render_chat, segments_to_text
from tests.convert.common import SPM_PATH, SPM_VOCAB, TEXTS, assert_same_state, random_model, save_tiny
from tests.helpers import tiny_llama_config

transformers = pytest.importorskip("transformers")

VOCAB = 49953  # Chinese-LLaMA's size: odd, not a multiple of anything


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_tp_to_hf_to_tp_is_bit_exact(tmp_path, kv_heads):
    model, path, _ = save_tiny(str(tmp_path), local_kv_heads_num=kv_heads)
    hf_dir = str(tmp_path / "hf")
    convert_tencentpretrain_to_hf(path, hf_dir, model.config, HfExportOptions(max_shard_bytes=60_000))
    index = json.load(open(os.path.join(hf_dir, "model.safetensors.index.json")))
    assert len(set(index["weight_map"].values())) > 2  # really sharded
    for out in ("back.bin", "back.safetensors", "back_blocks"):
        convert_hf_to_tencentpretrain(hf_dir, str(tmp_path / out), max_shard_bytes=100_000)
        assert_same_state(model.state_dict(), load_state_dict(str(tmp_path / out)))
    assert load_model_config(str(tmp_path / "back_config.json")) == model.config


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_from_pretrained_logits_equal_ours(tmp_path, kv_heads):
    config = tiny_llama_config(vocab_size=VOCAB, local_kv_heads_num=kv_heads, rope_theta=1e6, layernorm_eps=1e-5,
                               max_seq_length=256)
    model, path, config_path = save_tiny(str(tmp_path), config)
    hf_dir = str(tmp_path / "hf")
    assert tp_to_hf_script.main(["--input_model_path", path, "--config_path", config_path,
                                 "--output_model_path", hf_dir, "--max_shard_size", "4MB"]) == 0
    hf_config = json.load(open(os.path.join(hf_dir, "config.json")))
    assert (hf_config["vocab_size"], hf_config["num_key_value_heads"], hf_config["rope_theta"],
            hf_config["rms_norm_eps"], hf_config["max_position_embeddings"]) == (VOCAB, kv_heads, 1e6, 1e-5, 256)
    hf = transformers.LlamaForCausalLM.from_pretrained(hf_dir).eval()
    ids = torch.tensor([[1, 29871, 30275, 49952, 13, 40000, 2, 5], [1, 450, 4996, 17354, 1701, 29916, 432, 0]])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model.logits(ids), atol=2e-5, rtol=1e-4)


def _hf_dir_with_tokenizer(tmp_path, template: str = "user_bot") -> tuple[str, object]:
    model, path, config_path = save_tiny(str(tmp_path))
    hf_dir = str(tmp_path / "hf")
    assert tp_to_hf_script.main(["--input_model_path", path, "--config_path", config_path, "--output_model_path",
                                 hf_dir, "--spm_model_path", SPM_PATH, "--prompt_template", template]) == 0
    return hf_dir, model


def test_exported_tokenizer_encodes_like_sentencepiece(tmp_path):
    hf_dir, _ = _hf_dir_with_tokenizer(tmp_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    sp = sentencepiece.SentencePieceProcessor(model_file=SPM_PATH)
    for text in [*TEXTS.values(), " leading space", "two  spaces\nand a newline"]:
        ids = sp.encode(text)
        assert any(sp.is_byte(i) for i in ids) or text != TEXTS["emoji"]  # the emoji go through byte fallback
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids, text
        assert tokenizer(text)["input_ids"] == [sp.bos_id(), *ids], text
        assert tokenizer.decode(ids) == text
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.eos_token_id) == ("<s>", "</s>", sp.eos_id())


def test_exported_chat_template_and_special_files(tmp_path):
    hf_dir, _ = _hf_dir_with_tokenizer(tmp_path, "alpaca")
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    messages = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},
                {"role": "user", "content": "北京有什么好玩的？"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == segments_to_text(render_chat(get_template("alpaca"), messages, add_generation_prompt=True))
    files = {name: json.load(open(os.path.join(hf_dir, name)))
             for name in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "config.json")}
    assert files["special_tokens_map.json"] == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    assert (files["generation_config.json"]["bos_token_id"], files["generation_config.json"]["eos_token_id"]) == (1, 2)
    assert (files["config.json"]["bos_token_id"], files["config.json"]["eos_token_id"]) == (1, 2)
    assert files["tokenizer_config.json"]["eos_token"] == "</s>"
    assert os.path.getsize(os.path.join(hf_dir, "tokenizer.model")) == os.path.getsize(SPM_PATH)


def test_hf_bin_shards_convert_like_safetensors(tmp_path):
    model, path, _ = save_tiny(str(tmp_path))
    hf_dir = str(tmp_path / "hf")
    convert_tencentpretrain_to_hf(path, hf_dir, model.config)
    bin_dir = str(tmp_path / "hf_bin")
    writer = StateWriter(bin_dir, sharded=True, max_shard_bytes=50_000,
                         layout=ShardLayout("pytorch_model.bin.index.json", "pytorch_model-{number:05d}.bin"))
    for key, tensor in load_state_dict(hf_dir).items():
        writer.add(key, tensor)
    writer.close()
    os.link(os.path.join(hf_dir, "config.json"), os.path.join(bin_dir, "config.json"))
    out = str(tmp_path / "from_bin.bin")
    assert hf_to_tp_script.main(["--input_model_path", bin_dir, "--output_model_path", out, "--type", "7B"]) == 0
    assert_same_state(model.state_dict(), load_state_dict(out))


def test_vocabulary_mismatch_names_all_three_sizes(tmp_path):
    model, path, config_path = save_tiny(str(tmp_path), tiny_llama_config(vocab_size=800))
    with pytest.raises(CheckpointError, match=r"tokenizer 700 pieces, embedding 800 rows, config vocab_size 800"):
        convert_tencentpretrain_to_hf(path, str(tmp_path / "hf"), model.config,
                                      HfExportOptions(spm_model_path=SPM_PATH))
    with pytest.raises(CheckpointError, match=r"tokenizer \? pieces, embedding 800 rows, config vocab_size 900"):
        convert_tencentpretrain_to_hf(path, str(tmp_path / "hf"), model.config.replace(vocab_size=900))
    # a padded embedding is accepted when asked for
    convert_tencentpretrain_to_hf(path, str(tmp_path / "hf"), model.config,
                                  HfExportOptions(spm_model_path=SPM_PATH, allow_vocab_padding=True))


def test_unknown_and_missing_keys_are_listed(tmp_path):
    model, path, _ = save_tiny(str(tmp_path))
    hf_dir = str(tmp_path / "hf")
    convert_tencentpretrain_to_hf(path, hf_dir, model.config)
    state = load_state_dict(hf_dir)
    state["model.layers.0.self_attn.q_norm.weight"] = torch.ones(4)
    del state["model.layers.1.mlp.up_proj.weight"]
    for name in os.listdir(hf_dir):
        if name.startswith("model"):
            os.remove(os.path.join(hf_dir, name))
    save_file(state, os.path.join(hf_dir, "model.safetensors"))
    with pytest.raises(CheckpointError, match="q_norm"):
        convert_hf_to_tencentpretrain(hf_dir, str(tmp_path / "x.bin"))
    del state["model.layers.0.self_attn.q_norm.weight"]
    save_file(state, os.path.join(hf_dir, "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"not produced \(1\): encoder.transformer.1.feed_forward.linear_1"):
        convert_hf_to_tencentpretrain(hf_dir, str(tmp_path / "x.bin"))
    assert not os.path.exists(tmp_path / "x.bin")


def test_tied_hf_model_gets_an_output_layer(tmp_path):
    config = tiny_llama_config(vocab_size=SPM_VOCAB, tie_weights=True)
    model = random_model(config)
    hf_dir = str(tmp_path / "hf")
    save_file(model.state_dict(), str(tmp_path / "tied.bin"))
    convert_tencentpretrain_to_hf(str(tmp_path / "tied.bin"), hf_dir, config)
    assert "lm_head.weight" not in json.load(open(os.path.join(hf_dir, HF_SAFETENSORS.index_name)))["weight_map"]
    convert_hf_to_tencentpretrain(hf_dir, str(tmp_path / "back.bin"))
    back = load_state_dict(str(tmp_path / "back.bin"))
    assert torch.equal(back["target.lm.output_layer.weight"], model.state_dict()["embedding.word.embedding.weight"])
