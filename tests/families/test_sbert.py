"""Sentence-BERT (tencentpretrain/convert/families/sbert.py): a sentence-transformers BERT directory (BertModel +
1_Pooling) <-> the original's two-stream SBERT checkpoint, through the convert_sbert_* scripts. The pooled sentence
embeddings of run_classifier_siamese's model equal transformers' BertModel + the directory's pooling, both ways;
the round trip is bit-exact; what HF cannot compute is refused."""

from __future__ import annotations

import json
import os

import pytest
import torch

from scripts import convert_sbert_from_huggingface_to_tencentpretrain as hf_to_tp
from scripts import convert_sbert_from_tencentpretrain_to_huggingface as tp_to_hf
from tencentpretrain.checkpoint import load_state_dict, save_file
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.families.sbert import read_sentence_transformers_config
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.finetune.siamese import SiameseClassifier, load_pretrained_siamese

transformers = pytest.importorskip("transformers")

VOCAB = 97
CLS = "pooling_mode_cls_token"
MEAN = "pooling_mode_mean_tokens"


def _write_pooling(path, mode: str, modules: list[str] | None = None) -> None:
    names = modules or ["Transformer", "Pooling"]
    entries = [{"idx": i, "name": str(i), "path": {"Transformer": "", "Pooling": "1_Pooling"}.get(n, f"{i}_{n}"),
                "type": f"sentence_transformers.models.{n}"} for i, n in enumerate(names)]
    (path / "modules.json").write_text(json.dumps(entries))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, CLS: mode == CLS, MEAN: mode == MEAN, "pooling_mode_max_tokens": False}))


def _hf_sentence_bert(path, mode: str = MEAN):
    """A tiny random BertModel (with its pooler, which sentence-transformers never runs) and a pooling module."""
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=40, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(5)
    model = transformers.BertModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    _write_pooling(path, mode)
    return model


def _inputs():
    ids = torch.randint(5, VOCAB, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return ids, mask


def _hf_sentence_embeddings(model, ids, mask, mode: str) -> torch.Tensor:
    """What sentence-transformers computes: BertModel, then the mean over real tokens or the [CLS] vector."""
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    if mode == CLS:
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1)


def _our_sentence_embeddings(config_path, weights, ids, mask) -> torch.Tensor:
    config = load_model_config(config_path)
    model = SiameseClassifier(config, VOCAB, labels_num=2).eval()
    load_pretrained_siamese(model, weights)
    with torch.no_grad():
        u, v = model.features(0, ids, mask), model.features(1, ids, mask)  # seg: 1 real, 0 padding
    assert torch.equal(u, v)  # tied streams
    return u


@pytest.mark.parametrize("mode", [MEAN, CLS])
def test_pooled_embeddings_equal_sentence_transformers_both_ways_and_the_round_trip_is_bit_exact(tmp_path, mode):
    hf = _hf_sentence_bert(tmp_path / "hf", mode)
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "sbert.bin")]) == 0
    config = load_model_config(str(tmp_path / "sbert_config.json"))
    assert (config.embedding, config.encoder, config.tie_weights) == (("dual",), "dual", True)
    assert config.pooling == {MEAN: "mean", CLS: "first"}[mode]
    state = load_state_dict(str(tmp_path / "sbert.bin"))
    assert not any(k.startswith(("target.", "pooler")) for k in state)
    ids, mask = _inputs()
    expected = _hf_sentence_embeddings(hf, ids, mask, mode)
    ours = _our_sentence_embeddings(str(tmp_path / "sbert_config.json"), str(tmp_path / "sbert.bin"), ids, mask)
    assert float((ours - expected).abs().max()) < 1e-4  # HF -> ours

    assert tp_to_hf.main(["--input_model_path", str(tmp_path / "sbert.bin"), "--output_model_path",
                          str(tmp_path / "back")]) == 0
    back, original = load_state_dict(str(tmp_path / "back")), hf.state_dict()
    assert set(back) == {k for k in original if not k.startswith("pooler.")}  # the unused pooler is not kept
    assert all(torch.equal(back[k], original[k]) for k in back)
    assert read_sentence_transformers_config(str(tmp_path / "back")) == read_sentence_transformers_config(
        str(tmp_path / "hf"))
    reloaded = transformers.BertModel.from_pretrained(tmp_path / "back", add_pooling_layer=False).eval()
    theirs = _hf_sentence_embeddings(reloaded, ids, mask, mode)
    assert float((theirs - ours).abs().max()) < 1e-4  # ours -> HF
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "back"), "--output_model_path",
                          str(tmp_path / "again.safetensors")]) == 0
    again = load_state_dict(str(tmp_path / "again.safetensors"))
    assert set(again) == set(state) and all(torch.equal(again[k], v) for k, v in state.items())


def test_the_originals_two_layernorms_and_untied_streams_are_refused(tmp_path):
    _hf_sentence_bert(tmp_path / "hf")
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "sbert.bin")]) == 0
    config = ["--config_path", str(tmp_path / "sbert_config.json")]
    state = load_state_dict(str(tmp_path / "sbert.bin"))
    for key, change, message in (("embedding.dual.embedding_0.layer_norm.gamma", "stack", "two LayerNorms"),
                                 ("encoder.encoder_1.transformer.0.feed_forward.linear_1.bias", "streams",
                                  "the two streams of this SBERT checkpoint differ")):
        changed = dict(state)
        changed[key] = state[key] + 0.5
        save_file(changed, str(tmp_path / f"{change}.bin"))
        with pytest.raises(CheckpointError, match=message):
            tp_to_hf.main(["--input_model_path", str(tmp_path / f"{change}.bin"), "--output_model_path",
                           str(tmp_path / f"hf_{change}"), *config])
        assert not os.path.exists(tmp_path / f"hf_{change}")


def test_sentence_transformers_modules_the_converter_cannot_keep_are_refused(tmp_path):
    (tmp_path / "d").mkdir()
    _write_pooling(tmp_path / "d", MEAN, ["Transformer", "Pooling", "Dense"])
    with pytest.raises(ConfigError, match=r"modules \['sentence_transformers.models.Dense'\] are not supported"):
        read_sentence_transformers_config(str(tmp_path / "d"))
    _write_pooling(tmp_path / "d", MEAN, ["Transformer", "Pooling", "Normalize"])
    assert read_sentence_transformers_config(str(tmp_path / "d")) == {"sentence_transformers_pooling": "mean"}
    spec = json.loads((tmp_path / "d" / "1_Pooling" / "config.json").read_text())
    (tmp_path / "d" / "1_Pooling" / "config.json").write_text(json.dumps({**spec, CLS: True}))
    with pytest.raises(ConfigError, match="pooling .* is not supported"):
        read_sentence_transformers_config(str(tmp_path / "d"))


def test_a_bare_state_dict_converts_as_the_originals_script_read_it(tmp_path):
    hf = _hf_sentence_bert(tmp_path / "hf")
    bare = tmp_path / "bare" / "pytorch_model.bin"
    bare.parent.mkdir()
    torch.save(hf.state_dict(), bare)
    assert hf_to_tp.main(["--input_model_path", str(bare), "--output_model_path", str(tmp_path / "s.bin"),
                          "--layers_num", "2"]) == 0
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "d.bin")]) == 0
    from_dir, from_bare = load_state_dict(str(tmp_path / "d.bin")), load_state_dict(str(tmp_path / "s.bin"))
    assert set(from_dir) == set(from_bare) and all(torch.equal(from_dir[k], from_bare[k]) for k in from_dir)


def test_the_generic_scripts_take_a_bertmodel_directory_as_sbert(tmp_path):
    from scripts import convert_from_huggingface_to_tencentpretrain as any_hf_to_tp
    from scripts import convert_from_tencentpretrain_to_huggingface as any_tp_to_hf

    _hf_sentence_bert(tmp_path / "hf", CLS)
    assert any_hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                              str(tmp_path / "g.bin")]) == 0
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "s.bin")]) == 0
    generic, specific = load_state_dict(str(tmp_path / "g.bin")), load_state_dict(str(tmp_path / "s.bin"))
    assert set(generic) == set(specific) and all(torch.equal(generic[k], specific[k]) for k in generic)
    assert load_model_config(str(tmp_path / "g_config.json")).pooling == "first"
    assert any_tp_to_hf.main(["--model_type", "sbert", "--input_model_path", str(tmp_path / "g.bin"),
                              "--output_model_path", str(tmp_path / "back")]) == 0
    assert read_sentence_transformers_config(str(tmp_path / "back")) == {"sentence_transformers_pooling": "first"}
    with open(tmp_path / "back" / "config.json", encoding="utf-8") as f:
        assert json.load(f)["architectures"] == ["BertModel"]
