"""pretrain.py on the original's non-LLaMA language-model configs (models/rnn/lstm, models/cnn/gatedcnn_9,
models/bloom/1b1, shrunk): the loss falls, and the saved weights reload strictly into the same model."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.loading import load_model
from tencentpretrain.training.cli import main
from tests.helpers import REPO_ROOT
from tests.training.conftest import train_args

SMALL = {"emb_size": 32, "hidden_size": 32, "feedforward_size": 64, "heads_num": 4, "layers_num": 2,
         "max_seq_length": 64}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rnn/lstm_config.json", "cnn/gatedcnn_9_config.json", "bloom/1b1_config.json"])
def test_the_originals_lm_configs_pretrain_and_reload(name, tiny_dataset, tmp_path):
    with open(os.path.join(REPO_ROOT, "models", name), encoding="utf-8") as f:
        values = json.load(f)
    values.update({k: v for k, v in SMALL.items() if k in values})
    config_path = str(tmp_path / "config.json")
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(values, f)
    out = str(tmp_path / "out.bin")
    args = train_args(tiny_dataset, out, "--batch_size", "8", "--learning_rate", "5e-3", "--report_steps", "5",
                      steps=30, save=30)
    args[args.index("--config_path") + 1] = config_path
    result = main(args)
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < 0.9 * first, result.losses
    model = load_model(load_model_config(config_path), out, vocab_size=700)
    saved = load_state_dict(out)
    assert sorted(model.state_dict()) == sorted(saved)
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
