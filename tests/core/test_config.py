import argparse
import glob
import json
import os

import pytest

from tencentpretrain.config import (
    ModelConfig,
    add_model_args,
    load_model_config,
    model_config_from_args,
    parse_args_with_config,
)
from tencentpretrain.errors import ConfigError
from tencentpretrain.models.model import build_model
from tests.helpers import REPO_ROOT


# Model configs live in one folder per family; DeepSpeed configs sit at the top of models/.
def _is_dual(path: str) -> bool:
    """Two-stream configs (sbert, rnn/siamese_lstm) name no target of their own: tests/core/test_original_configs.py
    builds them with the clr target, tests/finetune/test_siamese.py as siamese classifiers."""
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("encoder") == "dual"


ALL_CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO_ROOT, "models", "*", "*.json")) if not _is_dual(p))


def test_configs_are_shipped():
    names = {os.path.relpath(p, os.path.join(REPO_ROOT, "models")) for p in ALL_CONFIGS}
    for size in ("7b", "13b", "33b", "65b"):
        assert f"llama/{size}_config.json" in names
    for size in ("7b", "13b", "70b"):
        assert f"llama2/{size}_config.json" in names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_every_shipped_config_loads_and_builds_on_meta(path):
    import torch

    config = load_model_config(path)
    with torch.device("meta"):
        model = build_model(config, vocab_size=config.vocab_size or 32000)
    assert len(model.state_dict()) > 0


def test_original_llama_7b_json_loads_unchanged(tmp_path):
    original = {
        "emb_size": 4096, "feedforward_size": 11008, "hidden_size": 4096, "hidden_act": "silu", "heads_num": 32,
        "layers_num": 32, "dropout": 0.0, "data_processor": "lm", "max_seq_length": 2048, "embedding": ["word"],
        "remove_transformer_bias": True, "remove_embedding_layernorm": True, "rotary_position_embedding": True,
        "encoder": "transformer", "feed_forward": "gated", "mask": "causal", "layernorm_positioning": "pre",
        "layernorm": "rms", "target": ["lm"],
    }
    path = tmp_path / "7b_config.json"
    path.write_text(json.dumps(original))
    config = load_model_config(path)
    assert config.embedding == ("word",) and config.kv_heads_num == 32 and config.head_size == 128
    assert config.rope_theta == 10000.0 and config.layernorm_eps == 1e-6 and not config.use_bias


def test_llama2_configs_have_the_right_eps_and_kv_heads():
    c70 = load_model_config(os.path.join(REPO_ROOT, "models/llama2/70b_config.json"))
    c7 = load_model_config(os.path.join(REPO_ROOT, "models/llama2/7b_config.json"))
    assert c70.kv_heads_num == 8 and c70.layernorm_eps == 1e-5
    assert c7.kv_heads_num == 32 and c7.layernorm_eps == 1e-5


def test_typo_in_key_names_file_key_and_suggestion(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"hidden_size": 64, "layernrom": "rms"}))
    with pytest.raises(ConfigError, match=r"bad\.json: unknown key 'layernrom' \(did you mean 'layernorm'"):
        load_model_config(path)


def test_unknown_component_names_file_key_and_close_names(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"feed_forward": "gatd"}))
    with pytest.raises(ConfigError) as info:
        load_model_config(path)
    message = str(info.value)
    assert "bad.json" in message and "feed_forward" in message and "did you mean 'gated'" in message


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "hidden_size": 64,\n}')
    with pytest.raises(ConfigError, match=r"bad\.json:3: invalid JSON"):
        load_model_config(path)


def test_validation_of_values():
    with pytest.raises(ConfigError, match="not divisible by local_kv_heads_num"):
        ModelConfig(heads_num=12, local_kv_heads_num=5)
    with pytest.raises(ConfigError, match="mask"):
        ModelConfig(mask="casual")
    with pytest.raises(ConfigError, match="rope_scaling"):
        ModelConfig(rope_scaling={"type": "yarn", "factor": 4})


def _parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--config_path")
    parser.add_argument("--seq_length", type=int, default=128)
    add_model_args(parser)
    args, other = parse_args_with_config(parser, argv)
    return args, other, model_config_from_args(args)


def test_precedence_defaults_then_json_then_flags_in_both_syntaxes(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"hidden_size": 96, "emb_size": 96, "heads_num": 4, "layers_num": 3,
                                "seq_length": 256, "data_processor": "lm"}))
    args, other, config = _parse(["--config_path", str(path)])
    assert (config.hidden_size, config.layers_num, config.feedforward_size) == (96, 3, 3072)
    assert args.seq_length == 256 and other["data_processor"] == "lm"
    args, _, config = _parse(["--config_path", str(path), "--layers_num=5", "--seq_length", "64"])
    assert config.layers_num == 5 and args.seq_length == 64 and config.hidden_size == 96
    _, _, config = _parse([f"--config_path={path}", "--remove_transformer_bias", "--embedding", "word", "pos"])
    assert config.remove_transformer_bias and config.embedding == ("word", "pos")


def test_rope_scaling_flag_takes_json():
    _, _, config = _parse(["--rope_scaling", '{"type": "linear", "factor": 2}'])
    assert config.rope_scaling_factor == 2.0


def test_round_trip_through_json(tmp_path, tiny_config):
    from tencentpretrain.config import save_model_config

    path = tmp_path / "c.json"
    save_model_config(tiny_config, path)
    assert load_model_config(path) == tiny_config
