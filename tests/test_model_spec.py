"""One model-loading spec and one dtype vocabulary for inference, evaluation and conversion."""

from __future__ import annotations

import argparse
import runpy

import pytest
import torch

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.config import save_model_config
from tencentpretrain.convert import cli as convert_cli
from tencentpretrain.dtypes import canonical_dtype, dtype_choices, parse_dtype
from tencentpretrain.errors import ConfigError
from tencentpretrain.evaluation.common import load_model_and_tokenizer, model_spec_from_args
from tencentpretrain.generation.options import (
    add_inference_args,
    load_tokenizer_and_model,
    model_spec_from_inference_args,
    parse_inference_args,
)
from tencentpretrain.model_spec import ModelSpec, load_spec_model, load_tokenizer
from tencentpretrain.models.model import build_model
from tests.helpers import REPO_ROOT, tiny_llama_config

SPM = f"{REPO_ROOT}/tests/assets/tiny_spm.model"


def test_one_vocabulary_with_both_spellings():
    assert [canonical_dtype(n) for n in ("fp16", "float16", "bf16", "bfloat16", "fp32", "float32")] == [
        "fp16", "fp16", "bf16", "bf16", "fp32", "fp32"]
    assert parse_dtype("bfloat16") is torch.bfloat16 and parse_dtype("keep") is None
    assert dtype_choices("auto") == ["auto", "fp32", "fp16", "bf16", "float32", "float16", "bfloat16"]
    with pytest.raises(ConfigError, match="unknown dtype 'half'; choose from keep, fp32"):
        parse_dtype("half")
    with pytest.raises(ConfigError, match="unknown dtype 'keep'"):  # keep means nothing when loading a model
        ModelSpec(dtype="keep")


def test_every_dtype_flag_speaks_it():
    evaluation = runpy.run_path(f"{REPO_ROOT}/scripts/evaluate_ppl.py", run_name="spec_test")["build_parser"]()
    for spelling in ("float16", "fp16"):
        args = evaluation.parse_args(["--corpus_path", "c", "--dtype", spelling])
        assert model_spec_from_args(args).torch_dtype() is torch.float16
    converter = argparse.ArgumentParser()
    convert_cli.add_dtype_arg(converter)
    for spelling, dtype in (("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16), ("keep", None)):
        assert convert_cli.dtype_from_flag(converter.parse_args(["--dtype", spelling]).dtype) is dtype


def _inference_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_inference_args(parser)
    return parse_inference_args(parser, argv)


def test_inference_and_evaluation_flags_make_the_same_spec(tmp_path):
    config = str(tmp_path / "c.json")
    save_model_config(tiny_llama_config(), config)
    paths = ["--config_path", config, "--load_model_path", "m.bin", "--spm_model_path", "t.model"]
    evaluation = runpy.run_path(f"{REPO_ROOT}/scripts/evaluate_ppl.py", run_name="spec_test")["build_parser"]()
    from_evaluation = model_spec_from_args(evaluation.parse_args([*paths, "--corpus_path", "x", "--dtype",
                                                                  "bfloat16", "--device", "cpu"]))
    from_inference = model_spec_from_inference_args(_inference_args([*paths, "--bf16", "--device", "cpu"]))
    assert from_inference == from_evaluation == ModelSpec(config_path=config, load_model_path="m.bin",
                                                          spm_model_path="t.model", dtype="bf16", device="cpu")
    char = model_spec_from_inference_args(_inference_args([*paths[:4], "--tokenizer", "char", "--vocab_path", "v"]))
    assert (char.tokenizer, char.vocab_path, char.spm_model_path) == ("char", "v", None)  # the original's flags
    int4 = model_spec_from_inference_args(_inference_args([*paths, "--use_int4", "--int4_group_size", "16"]))
    assert (int4.quantization, int4.int4_group_size, int4.dtype) == ("int4", 16, "fp32")
    with pytest.raises(ConfigError, match="quantization 'int3'"):
        ModelSpec(quantization="int3")


def test_inference_defaults_to_bf16_on_a_gpu_that_has_it(monkeypatch):
    """Without a dtype flag: fp32 on the CPU, bf16 on a CUDA device with bfloat16 (half of fp32's 28 GB at 7B),
    fp32 on one without; a flag always wins, and two flags are an error. The CUDA queries are patched: no GPU here."""
    paths = ["--load_model_path", "m.bin", "--spm_model_path", "t.model"]
    assert model_spec_from_inference_args(_inference_args([*paths, "--device", "cpu"])).dtype == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert model_spec_from_inference_args(_inference_args([*paths, "--device", "cuda"])).dtype == "bf16"
    assert model_spec_from_inference_args(_inference_args([*paths, "--device", "cuda:1"])).dtype == "bf16"
    assert model_spec_from_inference_args(_inference_args([*paths, "--device", "cuda", "--fp32"])).dtype == "fp32"
    assert model_spec_from_inference_args(_inference_args([*paths, "--device", "cuda", "--fp16"])).dtype == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert model_spec_from_inference_args(_inference_args([*paths, "--device", "cuda"])).dtype == "fp32"
    with pytest.raises(ConfigError, match="choose one of --bf16 and --fp32"):
        model_spec_from_inference_args(_inference_args([*paths, "--bf16", "--fp32"]))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec")
    torch.manual_seed(5)
    config = tiny_llama_config()
    save_model_config(config, root / "config.json")
    save_checkpoint(build_model(config, 700), str(root / "model.bin"))
    return {"config_path": str(root / "config.json"), "load_model_path": str(root / "model.bin"),
            "spm_model_path": SPM}


def test_inference_and_evaluation_load_the_same_model(checkpoint):
    """The evaluation loader and the inference loader (which also fuses for speed) give the same logits."""
    spec = ModelSpec(**checkpoint, device="cpu", dtype="fp32")
    evaluated, tokenizer = load_model_and_tokenizer(spec)
    argv = [f"--{k}={v}" for k, v in checkpoint.items()] + ["--device", "cpu"]
    generating, tokenizer2 = load_tokenizer_and_model(_inference_args(argv))
    assert tokenizer2.vocab_size == tokenizer.vocab_size == 700
    ids = torch.tensor([tokenizer.encode("中国的首都是北京，上海是最大的城市。")])  # (1, T)
    src, tgt, seg = ids[:, :-1], ids[:, 1:], torch.ones_like(ids[:, :-1])
    with torch.no_grad():
        a, b = evaluated(src, tgt, seg).loss, generating(src, tgt, seg).loss
    assert 5.0 < a.item() < 8.0  # about ln(700) = 6.55 for random weights: a real forward, not a constant
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_spec_loading_errors_say_what_to_pass(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="no tokenizer given: pass --spm_model_path"):
        load_tokenizer(ModelSpec(load_model_path=checkpoint["load_model_path"]))
    tokenizer = load_tokenizer(ModelSpec(spm_model_path=SPM))
    with pytest.raises(ConfigError, match="--config_path is required"):
        load_spec_model(ModelSpec(load_model_path=checkpoint["load_model_path"]), tokenizer)
    small = tmp_path / "small.json"
    save_model_config(tiny_llama_config(vocab_size=600), small)
    with pytest.raises(ConfigError, match="vocab_size=600, the tokenizer has 700 pieces"):
        load_spec_model(ModelSpec(config_path=str(small), device="cpu"), tokenizer)
    padded = tmp_path / "padded.json"
    save_model_config(tiny_llama_config(vocab_size=768), padded)
    model = load_spec_model(ModelSpec(config_path=str(padded), device="cpu"), tokenizer)
    assert model.embedding.word.embedding.weight.shape[0] == 768  # a padded table (more rows) is fine


def test_evaluation_honours_quantization(checkpoint):
    """A spec's int8 is not ignored by evaluation: the perplexity is the quantized model's, close to fp32's."""
    from tencentpretrain.evaluation.perplexity import PerplexityConfig, evaluate_perplexity

    texts = ["中国的首都是北京。", "自然语言处理" * 8]
    config = PerplexityConfig(seq_length=32, stride=16)
    results = {}
    for quantization in (None, "int8"):
        model, tokenizer = load_model_and_tokenizer(ModelSpec(**checkpoint, device="cpu", quantization=quantization))
        results[quantization] = evaluate_perplexity(model, tokenizer, texts, config).perplexity
    assert results[None] != results["int8"]  # the quantized kernels ran
    assert results["int8"] == pytest.approx(results[None], rel=0.05)
