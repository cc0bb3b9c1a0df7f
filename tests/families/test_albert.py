"""ALBERT (tencentpretrain/convert/families/albert.py): factorized embeddings and one shared layer. Logits parity
with transformers' AlbertForMaskedLM / AlbertForPreTraining both ways through the production scripts, bit-exact
round trips, and what HF ALBERT options are refused."""

from __future__ import annotations

import pytest
import torch

from scripts import convert_albert_from_huggingface_to_tencentpretrain as hf_to_tp
from scripts import convert_albert_from_tencentpretrain_to_huggingface as tp_to_hf
from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.families.albert import FAMILY
from tencentpretrain.convert.loading import load_model
from tencentpretrain.errors import ConfigError
from tencentpretrain.models.model import build_model

transformers = pytest.importorskip("transformers")

VOCAB = 131


def _hf_albert(path, cls_name: str):
    config = transformers.AlbertConfig(
        vocab_size=VOCAB, embedding_size=16, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=96, max_position_embeddings=48, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        classifier_dropout_prob=0.0, architectures=[cls_name])
    torch.manual_seed(6)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    return model


def _inputs():
    ids = torch.randint(5, VOCAB, (2, 13))
    types = torch.tensor([[0] * 7 + [1] * 6, [0] * 9 + [1] * 4])
    attention = torch.ones_like(ids)
    attention[1, 10:] = 0  # right padding in the second row
    seg = torch.where(attention.bool(), types + 1, 0)  # ours: segment = token type + 1, 0 = padding
    return ids, types, attention, seg


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("cls_name", ["AlbertForMaskedLM", "AlbertForPreTraining"])
def test_logits_equal_transformers_both_ways_and_the_round_trip_is_bit_exact(tmp_path, cls_name):
    hf = _hf_albert(tmp_path / "hf", cls_name)
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "m.bin")]) == 0
    config = load_model_config(str(tmp_path / "m_config.json"))
    assert config.parameter_sharing and config.factorized_embedding_parameterization and config.emb_size == 16
    ours = load_model(config, str(tmp_path / "m.bin")).eval()
    ids, types, attention, seg = _inputs()
    real = attention.bool()
    with torch.no_grad():
        out = hf(ids, attention_mask=attention, token_type_ids=types)
        hidden = ours.hidden_states(ids, seg)
        mlm = out.logits if cls_name == "AlbertForMaskedLM" else out.prediction_logits
        assert _max_diff(ours.target.mlm.logits(hidden)[real], mlm[real]) < 1e-4
        if cls_name == "AlbertForPreTraining":
            assert _max_diff(ours.target.sp.pair_logits(hidden), out.sop_logits) < 1e-4

    assert tp_to_hf.main(["--input_model_path", str(tmp_path / "m.bin"),
                          "--output_model_path", str(tmp_path / "back")]) == 0
    back, original = load_state_dict(str(tmp_path / "back")), hf.state_dict()
    assert set(back) == set(original)  # the tied decoder weight and both names of the MLM bias written
    assert all(torch.equal(back[k], v) for k, v in original.items())
    reloaded = getattr(transformers, cls_name).from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        again = reloaded(ids, attention_mask=attention, token_type_ids=types)
        theirs = again.logits if cls_name == "AlbertForMaskedLM" else again.prediction_logits
        assert _max_diff(theirs[real], ours.target.mlm.logits(ours.hidden_states(ids, seg))[real]) < 1e-4


def test_layer_groups_are_refused():
    hf = {"model_type": "albert", "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96,
          "num_hidden_layers": 4, "num_attention_heads": 4}
    assert FAMILY.config_from_hf(hf).parameter_sharing
    for groups in ({"num_hidden_groups": 2}, {"inner_group_num": 2}):
        with pytest.raises(ConfigError, match="num_hidden_groups or inner_group_num"):
            FAMILY.config_from_hf({**hf, **groups})


# The model keys of the original's models/albert/base_config.json (sizes made tiny).
ORIGINAL_ALBERT = dict(emb_size=16, hidden_size=32, feedforward_size=48, hidden_act="relu", heads_num=4, layers_num=2,
                       max_seq_length=512, dropout=0.0, embedding=("word", "pos", "seg"), encoder="transformer",
                       mask="fully_visible", factorized_embedding_parameterization=True, parameter_sharing=True,
                       target=("mlm", "sp"), vocab_size=VOCAB)


def test_a_model_of_the_originals_albert_config_exports_once_its_layernorm_is_hfs(tmp_path):
    """The original's ALBERT config builds the keys an HF ALBERT converts to; its LayerNorm is not HF's."""
    from tencentpretrain.checkpoint import save_file
    from tencentpretrain.config import ModelConfig
    from tencentpretrain.convert.hf import HfExportOptions, convert_tencentpretrain_to_hf

    config = ModelConfig(**ORIGINAL_ALBERT)
    save_file(build_model(config).state_dict(), str(tmp_path / "albert.bin"))
    with pytest.raises(ConfigError, match=r"layernorm='normal' \(HF ALBERT computes 'standard'\)"):
        convert_tencentpretrain_to_hf(str(tmp_path / "albert.bin"), str(tmp_path / "hf"), config,
                                      HfExportOptions(family="albert"))
    convert_tencentpretrain_to_hf(str(tmp_path / "albert.bin"), str(tmp_path / "hf"),
                                  config.replace(layernorm="standard"), HfExportOptions(family="albert"))
    assert transformers.AlbertForPreTraining.from_pretrained(tmp_path / "hf").config.embedding_size == 16
