"""Qwen2 (tencentpretrain/convert/families/qwen2.py): LLaMA with Q/K/V biases and a tied head in the small sizes.
Checked against transformers' Qwen2ForCausalLM built tiny: logits both ways, bit-exact round trips, greedy
generation, LoRA training from an HF directory, the GGUF export (gguf's reader; llama.cpp when installed) and the
OpenAI server on an HF Qwen2 directory."""

from __future__ import annotations

import json
import os

import httpx
import numpy as np
import pytest
import torch

from scripts import convert_qwen2_from_huggingface_to_tencentpretrain as hf_to_tp
from scripts import convert_qwen2_from_tencentpretrain_to_huggingface as tp_to_hf
from tencentpretrain.checkpoint import load_state_dict, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.families.llama import permute_for_hf_rope
from tencentpretrain.convert.families.qwen2 import FAMILY
from tencentpretrain.convert.hf import HfExportOptions, convert_tencentpretrain_to_hf
from tencentpretrain.convert.llama_gguf import GgufOptions, convert_tencentpretrain_to_gguf
from tencentpretrain.convert.loading import load_model
from tencentpretrain.errors import ConfigError
from tencentpretrain.generation import GenerationConfig, generate
from tencentpretrain.models.model import build_model
from tencentpretrain.transforms.lora import merge_lora_
from tests.convert.common import SPM_PATH, SPM_VOCAB, greedy, random_model
from tests.helpers import REPO_ROOT, tiny_llama_config

transformers = pytest.importorskip("transformers")

VOCAB = SPM_VOCAB  # the tiny SentencePiece model's: the same models train, serve and export with a tokenizer
ATTN = "encoder.transformer.{}.self_attn.linear_layers.{}"


def _hf_qwen2(path, *, tie: bool, std: float = 0.02, seed: int = 4):
    """A tiny random Qwen2ForCausalLM saved sharded, with biases and norms perturbed so that they matter."""
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=1e6,
        tie_word_embeddings=tie, initializer_range=std, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * (0.1 if "norm" in name else 3 * std))
    model.save_pretrained(path, max_shard_size="100KB")
    return model


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_logits_equal_transformers_both_ways_and_round_trips_are_bit_exact(tmp_path, tie):
    hf = _hf_qwen2(tmp_path / "hf", tie=tie)
    assert len([f for f in os.listdir(tmp_path / "hf") if f.endswith(".safetensors")]) > 1  # really sharded
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "m.bin")]) == 0
    config = load_model_config(str(tmp_path / "m_config.json"))
    assert (config.qkv_bias, config.remove_transformer_bias, config.tie_weights) == (True, True, tie)
    ours = load_model(config, str(tmp_path / "m.bin")).eval()
    assert ours.encoder.transformer[0].self_attn.final_linear.bias is None  # no bias on O
    ids = torch.randint(0, VOCAB, (2, 17))
    with torch.no_grad():
        theirs = hf(ids).logits
        assert _max_diff(ours.logits(ids), theirs) < 1e-4  # HF -> ours
        state = ours.state_dict()
        unbiased = load_model(config, str(tmp_path / "m.bin")).eval()
        unbiased.encoder.transformer[1].self_attn.linear_layers[1].bias.zero_()
        assert _max_diff(unbiased.logits(ids), theirs) > 1e-3  # the K bias matters: the comparison can fail

    assert tp_to_hf.main(["--input_model_path", str(tmp_path / "m.bin"), "--output_model_path",
                          str(tmp_path / "back")]) == 0
    back, saved = load_state_dict(str(tmp_path / "back")), load_state_dict(str(tmp_path / "hf"))
    assert set(back) == set(saved) and ("lm_head.weight" in back) == (not tie)  # a tied head stays tied
    assert all(torch.equal(back[k], v) for k, v in saved.items())
    reloaded = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert _max_diff(reloaded(ids).logits, ours.logits(ids)) < 1e-4  # ours -> HF
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "back"), "--output_model_path",
                          str(tmp_path / "again.safetensors")]) == 0
    again = load_state_dict(str(tmp_path / "again.safetensors"))
    assert set(again) == set(state) and all(torch.equal(again[k], v) for k, v in state.items())


def test_greedy_generation_equals_transformers_generate(tmp_path):
    hf = _hf_qwen2(tmp_path / "hf", tie=True, std=0.15)  # peaked logits: greedy is decided by clear margins
    ours = load_model(None, str(tmp_path / "hf"))  # an HF directory, read through the family's map
    prompts = [[1, 45, 300, 17, 650, 9], [1, 88]]
    expected = [hf.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                            pad_token_id=0)[0, len(p):].tolist() for p in prompts]
    done = generate(ours, None, prompts, GenerationConfig(max_new_tokens=12, stop_at_eos=False))
    assert [c.token_ids for c in done] == expected
    assert len({tuple(e) for e in expected}) == 2


@pytest.mark.parametrize(("mode", "min_cosine"), [("int8", 0.995), ("int4", 0.9)])
def test_quantized_qwen2_keeps_its_biases_and_its_logits(tmp_path, mode, min_cosine):
    """The inference quantization swaps every Linear: the Q/K/V biases must survive it (without them the
    logits move far: the check can fail)."""
    from tencentpretrain.transforms.quantize import quantize_model

    _hf_qwen2(tmp_path / "hf", tie=True, std=0.05)
    ours, quantized = load_model(None, str(tmp_path / "hf")), load_model(None, str(tmp_path / "hf")).eval()
    quantize_model(quantized, mode)
    ids = torch.randint(0, VOCAB, (1, 16))
    with torch.no_grad():
        full, fast = ours.logits(ids)[0], quantized.logits(ids)[0]
        for layer in ours.encoder.transformer:
            for projection in layer.self_attn.linear_layers:
                projection.bias.zero_()
        unbiased = ours.logits(ids)[0]
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(full, fast, dim=-1).min() >= min_cosine
    assert cosine(full, unbiased, dim=-1).min() < 0.9


def test_a_config_without_qkv_biases_is_not_qwen2(tmp_path):
    model = random_model(tiny_llama_config(vocab_size=VOCAB))
    save_checkpoint(model, str(tmp_path / "llama.bin"))
    with pytest.raises(ConfigError, match=r"HF Qwen2 \(Qwen2ForCausalLM\) cannot represent this config: "
                                          r"qkv_bias=False \(HF Qwen2 computes True\)"):
        convert_tencentpretrain_to_hf(str(tmp_path / "llama.bin"), str(tmp_path / "hf"), model.config,
                                      HfExportOptions(family="qwen2"))
    assert not os.path.exists(tmp_path / "hf")


def test_sliding_window_attention_is_refused():
    hf = {"model_type": "qwen2", "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 112,
          "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2}
    assert FAMILY.config_from_hf({**hf, "use_sliding_window": True, "max_window_layers": 4}).qkv_bias  # no layer
    for sliding in ({"use_sliding_window": True, "max_window_layers": 2},
                    {"layer_types": ["full_attention", "sliding_attention"] * 2}):
        with pytest.raises(ConfigError, match="sliding-window attention"):
            FAMILY.config_from_hf({**hf, **sliding})


@pytest.mark.parametrize(("size", "parameters", "tied"), [
    ("0.5b", 494_032_768, True), ("1.5b", 1_543_714_304, True), ("7b", 7_615_616_512, False)])
def test_shipped_configs_have_the_qwen2_parameter_counts(size, parameters, tied):
    config = load_model_config(os.path.join(REPO_ROOT, "models", "qwen2", f"{size}_config.json"))
    with torch.device("meta"):
        model = build_model(config, init=False)
    assert sum(p.numel() for p in model.parameters()) == parameters  # Qwen2's published counts
    hf = FAMILY.hf_config(config, config.vocab_size)
    assert (hf["tie_word_embeddings"], hf["rope_theta"], hf["architectures"]) == (tied, 1e6, ["Qwen2ForCausalLM"])
    assert FAMILY.config_from_hf(hf) == config.replace(dropout=0.0)


@pytest.mark.slow
def test_lora_trains_from_an_hf_qwen2_directory_and_merges_into_an_hf_export(tmp_path):
    from tencentpretrain.training.cli import main as pretrain
    from tests.training.conftest import SPM, build_tiny_dataset

    hf_dir = str(tmp_path / "hf")
    _hf_qwen2(hf_dir, tie=True, std=0.15)  # far from uniform: adapters on Q, K, V alone can move the loss
    assert hf_to_tp.main(["--input_model_path", hf_dir, "--output_model_path", str(tmp_path / "base.bin")]) == 0
    config_path = str(tmp_path / "base_config.json")
    out = str(tmp_path / "lora.bin")
    result = pretrain(["--dataset_path", build_tiny_dataset(str(tmp_path / "data")), "--spm_model_path", SPM,
                       "--config_path", config_path, "--pretrained_model_path", hf_dir, "--output_model_path", out,
                       "--total_steps", "24", "--save_checkpoint_steps", "24", "--report_steps", "4",
                       "--batch_size", "4", "--learning_rate", "5e-2", "--use_lora", "--lora_r", "4",
                       "--lora_target_modules", "linear_layers.0", "linear_layers.1", "linear_layers.2"])
    assert np.mean(result.losses[-4:]) < np.mean(result.losses[:4]) - 0.1, result.losses  # the adapters learn
    assert sorted(torch.load(out, weights_only=True)) == sorted(
        f"{ATTN.format(i, j)}.lora_{ab}" for i in range(2) for j in range(3) for ab in "AB")
    trained = result.engine.module.eval()
    merged = load_model(config_path, hf_dir, lora_path=out)
    merge_lora_(merged)
    save_checkpoint(merged, str(tmp_path / "merged.bin"))
    convert_tencentpretrain_to_hf(str(tmp_path / "merged.bin"), str(tmp_path / "merged_hf"), merged.config,
                                  HfExportOptions(family="qwen2"))
    hf = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "merged_hf").eval()
    ids = torch.randint(3, VOCAB, (2, 12))
    with torch.no_grad():
        assert _max_diff(hf(ids).logits, trained.logits(ids)) < 1e-4


# ---------------------------------------------------------------------------------------------- GGUF
def _export_gguf(tmp_path, *, std: float = 0.02, outtype: str = "f32"):
    _hf_qwen2(tmp_path / "hf", tie=True, std=std)
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "m.bin")]) == 0
    model = load_model(str(tmp_path / "m_config.json"), str(tmp_path / "m.bin"))
    out = str(tmp_path / "m.gguf")
    convert_tencentpretrain_to_gguf(str(tmp_path / "m.bin"), out, model.config, SPM_PATH, GgufOptions(outtype=outtype))
    return model, out


def test_gguf_export_is_llama_cpps_qwen2_with_its_bias_tensors(tmp_path):
    gguf = pytest.importorskip("gguf")
    model, out = _export_gguf(tmp_path)
    reader = gguf.GGUFReader(out)
    field = reader.fields["general.architecture"]
    assert bytes(field.parts[-1]).decode() == "qwen2"
    assert reader.fields["qwen2.attention.head_count_kv"].parts[-1].tolist() == [2]
    tensors = {t.name: torch.from_numpy(np.array(t.data)).reshape(*reversed(t.shape.tolist())) for t in reader.tensors}
    assert len(tensors) == 2 + 12 * 2 + 1  # token_embd, output_norm, output; per block 9 weights + 3 biases
    state = model.state_dict()
    for layer in range(2):
        for index, name, heads in ((0, "attn_q", 4), (1, "attn_k", 2)):  # HF's (NeoX) row order
            weight, bias = state[f"{ATTN.format(layer, index)}.weight"], state[f"{ATTN.format(layer, index)}.bias"]
            assert torch.equal(tensors[f"blk.{layer}.{name}.weight"], permute_for_hf_rope(weight, heads))
            assert torch.equal(tensors[f"blk.{layer}.{name}.bias"], permute_for_hf_rope(bias[:, None], heads)[:, 0])
        assert torch.equal(tensors[f"blk.{layer}.attn_v.bias"], state[f"{ATTN.format(layer, 2)}.bias"])
        assert f"blk.{layer}.attn_output.bias" not in tensors


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_llama_cpp_greedy_on_the_qwen2_gguf_equals_ours(tmp_path, outtype):
    llama_cpp = pytest.importorskip("llama_cpp")
    model, out = _export_gguf(tmp_path, std=0.15, outtype=outtype)
    llm = llama_cpp.Llama(out, n_ctx=128, n_threads=1, verbose=False)
    prompt = [1, 45, 300, 17, 650, 9]
    theirs = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        theirs.append(token)
        if len(theirs) == 12:
            break
    assert theirs == greedy(model, prompt, 12)


# ---------------------------------------------------------------------------------------------- serving
@pytest.mark.slow
def test_the_server_on_an_hf_qwen2_directory_answers_as_transformers(tmp_path):
    """The HF directory our export wrote (with the tokenizer) served as LLaMA's are: greedy chat tokens equal HF's."""
    from tencentpretrain.model_spec import ModelSpec, load_model_for_inference, load_tokenizer
    from tencentpretrain.tokenizers.templates import encode_chat, get_template
    from tests.serving.helpers import make_app, running

    _hf_qwen2(tmp_path / "hf", tie=False, std=0.15)
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "m.bin")]) == 0
    served = str(tmp_path / "served")
    assert tp_to_hf.main(["--input_model_path", str(tmp_path / "m.bin"), "--output_model_path", served,
                          "--spm_model_path", SPM_PATH]) == 0
    with open(os.path.join(served, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["model_type"] == "qwen2"
    spec = ModelSpec(load_model_path=served, dtype="fp32", device="cpu")
    tokenizer = load_tokenizer(spec)
    model = load_model_for_inference(spec, tokenizer)
    messages = [{"role": "user", "content": "北京有什么好玩的地方？"}]
    prompt = encode_chat(tokenizer, get_template("user_bot"), messages, add_generation_prompt=True).ids
    hf = transformers.Qwen2ForCausalLM.from_pretrained(served).eval()
    expected = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False,
                           eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    with running(make_app(model, tokenizer)) as url:
        r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "messages": messages, "max_tokens": 10, "temperature": 0})
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["message"]["content"]
    if tokenizer.eos_id in expected:
        expected = expected[: expected.index(tokenizer.eos_id)]
    assert content == tokenizer.decode(expected)
    assert len(expected) >= 3  # something was generated to compare


def test_an_hf_qwen2_directory_brings_its_byte_level_tokenizer(tmp_path):
    """Qwen2 ships tokenizer.json (byte-level BPE), no tokenizer.model: with no tokenizer flag, inference reads it
    through transformers (``hfpretrained``) and encodes as HF does."""
    import tokenizers

    from tencentpretrain.model_spec import ModelSpec, load_tokenizer

    _hf_qwen2(tmp_path / "hf", tie=True)
    trainer = tokenizers.ByteLevelBPETokenizer()
    trainer.train_from_iterator(["通义千问 Qwen2 speaks 中文 and English."] * 20, vocab_size=300, min_frequency=1,
                                special_tokens=["<|endoftext|>"], show_progress=False)
    hf_tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=trainer._tokenizer,
                                                        eos_token="<|endoftext|>")
    hf_tokenizer.save_pretrained(str(tmp_path / "hf"))
    ours = load_tokenizer(ModelSpec(load_model_path=str(tmp_path / "hf")))
    assert ours.name == "hfpretrained"
    text = "Qwen2 讲中文 and English!"
    assert ours.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)
    assert ours.decode(ours.encode(text)) == text
