"""The HF family registry and the one shard-by-shard driver: any family through the generic scripts, bit-exact;
stale output directories; configs an HF class cannot compute; generation_config.json that generate() accepts."""

from __future__ import annotations

import json
import logging
import os
import warnings

import pytest
import torch

from scripts import convert_from_huggingface_to_tencentpretrain as any_hf_to_tp_script
from scripts import convert_from_tencentpretrain_to_huggingface as tp_to_any_hf_script
from scripts import convert_llama_from_huggingface_to_tencentpretrain as llama_hf_to_tp_script
from scripts import convert_llama_from_tencentpretrain_to_huggingface as llama_tp_to_hf_script
from tencentpretrain.checkpoint import load_state_dict, save_file
from tencentpretrain.cli import run as run_entry_point
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.families import get_family, registry
from tencentpretrain.convert.families.llama import llama_hf_weight_map
from tencentpretrain.convert.hf import HfExportOptions, convert_hf_to_tencentpretrain, convert_tencentpretrain_to_hf
from tencentpretrain.errors import CheckpointError, ConfigError
from tests.convert.common import SPM_PATH, random_model, save_tiny
from tests.helpers import REPO_ROOT, tiny_llama_config

transformers = pytest.importorskip("transformers")

VOCAB = 97


def _hf_bert(path: str, *, max_shard_size: str = "40KB"):
    """A tiny random BertForPreTraining saved sharded (save_pretrained drops the tied decoder weight)."""
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, architectures=["BertForPreTraining"])
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path, max_shard_size=max_shard_size)
    return model


def test_registry_is_keyed_by_model_type():
    assert set(registry()) >= {"llama", "mistral", "qwen2", "bert", "albert", "roberta", "xlm-roberta", "gpt2", "t5",
                               "bart", "vit", "bloom", "pegasus", "sbert"}
    assert all(family.model_type == key for key, family in registry().items())
    known = "albert, bart, bert, bloom, gpt2, llama, mistral, pegasus, qwen2, roberta, sbert, t5, vit, xlm-roberta"
    with pytest.raises(ConfigError, match=f"no HF family is registered for model_type 'falcon'; known: {known} "):
        get_family("falcon")


def test_any_family_through_the_generic_scripts_is_bit_exact(tmp_path):
    hf = _hf_bert(str(tmp_path / "hf"))
    assert len([f for f in os.listdir(tmp_path / "hf") if f.endswith(".safetensors")]) > 1  # really sharded
    blocks = str(tmp_path / "tp_blocks")
    assert any_hf_to_tp_script.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path", blocks,
                                     "--block_size", "0.00004"]) == 0
    config = load_model_config(os.path.join(blocks, "tencentpretrain_config.json"))
    assert config.target == ("mlm", "sp") and config.layernorm == "standard"
    state = load_state_dict(blocks)
    assert torch.equal(state["target.mlm.linear_2.weight"], state["embedding.word.embedding.weight"])  # the tie
    assert tp_to_any_hf_script.main(["--model_type", "bert", "--input_model_path", blocks,
                                     "--output_model_path", str(tmp_path / "back")]) == 0
    back = load_state_dict(str(tmp_path / "back"))
    original = hf.state_dict()
    assert set(back) == set(original)
    for key, tensor in original.items():
        assert torch.equal(back[key], tensor), key
    reloaded = transformers.BertForPreTraining.from_pretrained(tmp_path / "back").eval()
    ids = torch.randint(0, VOCAB, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).prediction_logits, hf(ids).prediction_logits, rtol=0, atol=0)


@pytest.fixture
def capsys_exit(capsys):
    """Run a script's main as its ``__main__`` does (under the ``run`` harness); return (exit code, stderr)."""

    def run(main, argv):
        with pytest.raises(SystemExit) as exit_info:
            run_entry_point(lambda: main(argv))
        return exit_info.value.code, capsys.readouterr().err

    return run


def test_a_family_script_refuses_another_family(tmp_path, capsys_exit):
    _hf_bert(str(tmp_path / "hf"))
    code, err = capsys_exit(llama_hf_to_tp_script.main, ["--input_model_path", str(tmp_path / "hf"),
                                                         "--output_model_path", str(tmp_path / "x.bin")])
    assert code == 2 and "holds an HF BERT model (model_type 'bert'), not LLaMA" in err
    assert not os.path.exists(tmp_path / "x.bin")


# ---------------------------------------------------------------------------------------------- stale outputs
def _llama_logits(hf_dir: str, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return transformers.LlamaForCausalLM.from_pretrained(hf_dir).eval()(ids).logits


def test_a_non_empty_output_is_refused_and_overwrite_replaces_it_whole(tmp_path, capsys_exit):
    """An older export's single model.safetensors must not survive next to the new shards: transformers would
    load the stale file (it prefers model.safetensors to an index)."""
    model, path, config_path = save_tiny(str(tmp_path))
    stale = random_model(model.config, seed=7)
    hf_dir = str(tmp_path / "hf")
    convert_tencentpretrain_to_hf(path, hf_dir, model.config)
    # An older conversion, written as one file (as transformers' save_pretrained of a small model does).
    save_file(llama_hf_weight_map(stale.config).to_external(stale.state_dict()),
              os.path.join(hf_dir, "model.safetensors"))
    code, err = capsys_exit(llama_tp_to_hf_script.main, ["--input_model_path", path, "--config_path", config_path,
                                                         "--output_model_path", hf_dir])
    assert code == 2 and "exists and is not empty; pass --overwrite" in err
    assert os.path.exists(os.path.join(hf_dir, "model.safetensors"))  # refused: nothing touched

    with pytest.raises(ConfigError, match="pass --overwrite"):
        convert_tencentpretrain_to_hf(path, hf_dir, model.config)
    convert_tencentpretrain_to_hf(path, hf_dir, model.config, HfExportOptions(overwrite=True))
    assert "model.safetensors" not in os.listdir(hf_dir)
    ids = torch.randint(0, 700, (1, 9))
    torch.testing.assert_close(_llama_logits(hf_dir, ids), model.logits(ids), atol=2e-5, rtol=1e-4)
    assert not [n for n in os.listdir(tmp_path) if ".staging-" in n or ".old-" in n]


def test_a_failed_conversion_leaves_the_output_as_it_was(tmp_path):
    model, path, _ = save_tiny(str(tmp_path))
    hf_dir = str(tmp_path / "hf")
    convert_tencentpretrain_to_hf(path, hf_dir, model.config)
    before = sorted(os.listdir(hf_dir))
    with pytest.raises(CheckpointError, match="vocabulary sizes disagree"):  # found before anything is written
        convert_tencentpretrain_to_hf(path, hf_dir, model.config.replace(vocab_size=800),
                                      HfExportOptions(overwrite=True))
    assert sorted(os.listdir(hf_dir)) == before
    blocks = str(tmp_path / "blocks")
    os.makedirs(blocks)
    open(os.path.join(blocks, "tencentpretrain_model-0.bin"), "w").close()
    with pytest.raises(ConfigError, match="pass --overwrite"):
        convert_hf_to_tencentpretrain(hf_dir, blocks)
    convert_hf_to_tencentpretrain(hf_dir, blocks, overwrite=True, max_shard_bytes=50_000)
    assert torch.equal(load_state_dict(blocks)["encoder.layer_norm.weight"],
                       model.state_dict()["encoder.layer_norm.weight"])
    assert not [n for n in os.listdir(tmp_path) if ".staging-" in n or ".old-" in n]


# ---------------------------------------------------------------------------------------------- what HF cannot compute
@pytest.mark.parametrize(("family", "config", "lost"), [
    ("llama", tiny_llama_config(vocab_size=700, remove_attention_scale=True), "remove_attention_scale=True"),
    ("llama", tiny_llama_config(vocab_size=700, mask="fully_visible"), "mask=.fully_visible."),
], ids=["llama-no-attention-scale", "llama-bidirectional"])
def test_an_export_the_hf_class_cannot_compute_is_refused(tmp_path, family, config, lost):
    model = random_model(config)
    save_file(model.state_dict(), str(tmp_path / "m.bin"))
    with pytest.raises(ConfigError, match=rf"HF LLaMA \(LlamaForCausalLM\) cannot represent this config: {lost}"):
        convert_tencentpretrain_to_hf(str(tmp_path / "m.bin"), str(tmp_path / "hf"), config,
                                      HfExportOptions(family=family))
    assert not os.path.exists(tmp_path / "hf")


def test_bert_with_the_originals_layernorm_is_refused(tmp_path):
    """The original's LayerNorm is not HF BERT's: exporting it as BertForMaskedLM would change every output."""
    from tencentpretrain.models.model import build_model

    config = load_model_config(os.path.join(REPO_ROOT, "models", "bert", "tiny_config.json")).replace(vocab_size=VOCAB)
    save_file(build_model(config).state_dict(), str(tmp_path / "bert.bin"))
    with pytest.raises(ConfigError, match=r"layernorm='normal' \(HF BERT computes 'standard'\)"):
        convert_tencentpretrain_to_hf(str(tmp_path / "bert.bin"), str(tmp_path / "hf"), config,
                                      HfExportOptions(family="bert"))
    assert convert_tencentpretrain_to_hf(str(tmp_path / "bert.bin"), str(tmp_path / "hf"),
                                         config.replace(layernorm="standard"), HfExportOptions(family="bert")) is None


# ---------------------------------------------------------------------------------------------- generation_config.json
def _generate_messages(hf_dir: str, caplog) -> list[str]:
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir).eval()
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        model.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=3, do_sample=False)
    return [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]


def test_generation_config_has_no_max_length_and_generate_does_not_warn(tmp_path, caplog):
    model, path, config_path = save_tiny(str(tmp_path))
    hf_dir = str(tmp_path / "hf")
    convert_tencentpretrain_to_hf(path, hf_dir, model.config, HfExportOptions(spm_model_path=SPM_PATH))
    generation_path = os.path.join(hf_dir, "generation_config.json")
    with open(generation_path, encoding="utf-8") as f:
        generation = json.load(f)
    assert generation == {"bos_token_id": 1, "eos_token_id": 2}
    assert not [m for m in _generate_messages(hf_dir, caplog) if "max_length" in m]
    # What the export used to write: generate() then warns on every call (so this test can fail).
    with open(generation_path, "w", encoding="utf-8") as f:
        json.dump({**generation, "max_length": model.config.max_seq_length}, f)
    assert [m for m in _generate_messages(hf_dir, caplog) if "max_length" in m]


def test_a_family_is_one_file():
    """Mistral was added as one map file (+ a config and a test): nothing else in the package or the scripts
    names it, so the registry alone makes the converters, load_model and pretrain.py accept it."""
    assert get_family("mistral").name == "Mistral"
    mentions = []
    for root in ("tencentpretrain", "scripts"):
        for directory, _, files in os.walk(os.path.join(REPO_ROOT, root)):
            for name in files:
                path = os.path.join(directory, name)
                if name.endswith(".py") and not path.endswith(os.path.join("families", "mistral.py")):
                    with open(path, encoding="utf-8") as f:
                        if "mistral" in f.read().lower():
                            mentions.append(os.path.relpath(path, REPO_ROOT))
    assert mentions == []


def test_a_tied_t5_head_exports_as_an_untied_copy(tmp_path):
    """Our tied T5 head has no HF flag (HF's tied T5 head scales the decoder output), but an untied HF head
    holding the embedding computes the same: allowed, and logits equal."""
    from tencentpretrain.models.model import build_model

    config = load_model_config(os.path.join(REPO_ROOT, "models", "t5", "small_config.json")).replace(
        emb_size=32, hidden_size=32, feedforward_size=64, heads_num=4, layers_num=2, decoder_layers_num=2,
        dropout=0.0, vocab_size=VOCAB)
    assert config.tie_weights and config.layernorm == "t5"
    torch.manual_seed(0)
    model = build_model(config).eval()
    save_file(model.state_dict(), str(tmp_path / "t5.bin"))
    convert_tencentpretrain_to_hf(str(tmp_path / "t5.bin"), str(tmp_path / "hf"), config, HfExportOptions(family="t5"))
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    src, tgt = torch.randint(2, VOCAB, (1, 7)), torch.randint(2, VOCAB, (1, 5))
    seg = torch.ones_like(src)
    with torch.no_grad():
        theirs = hf(input_ids=src, decoder_input_ids=tgt).logits
        ours = model.target.logits(model.decode(model.hidden_states(src, seg), seg, tgt))
    torch.testing.assert_close(ours, theirs, atol=3e-5, rtol=1e-4)
