"""Helpers of the conversion tests: tiny random models saved to disk, our greedy decoding, the tiny tokenizer."""

from __future__ import annotations

import os

import torch

from tencentpretrain.checkpoint import save_file
from tencentpretrain.config import ModelConfig, save_model_config
from tencentpretrain.models.model import Model, build_model
from tests.helpers import REPO_ROOT, tiny_llama_config

SPM_PATH = os.path.join(REPO_ROOT, "tests", "assets", "tiny_spm.model")
SPM_VOCAB = 700
TEXTS = {
    "chinese": "北京有什么好玩的地方？故宫和长城都很有名。",
    "mixed": "LLaMA 模型在 2023 年发布, Chinese-LLaMA 扩充了中文词表 (vocabulary)。",
    "emoji": "今天天气真好😀🎉, let's go 👍🏽!",
}


def random_model(config: ModelConfig, *, std: float = 0.02, seed: int = 0) -> Model:
    """A model with random weights, norms perturbed so that they matter."""
    torch.manual_seed(seed)
    model = build_model(config)
    model.init_weights(std=std)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def save_tiny(directory: str, config: ModelConfig | None = None, *, name: str = "model.bin", std: float = 0.02,
              **overrides) -> tuple[Model, str, str]:
    """Save a random tiny LLaMA and its JSON config in ``directory``; return (model, weights, config path)."""
    config = config or tiny_llama_config(**{"vocab_size": SPM_VOCAB, **overrides})
    model = random_model(config, std=std)
    path = os.path.join(directory, name)
    save_file(model.state_dict(), path)
    config_path = os.path.join(directory, "config.json")
    save_model_config(config, config_path)
    return model, path, config_path


def assert_same_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    """Same keys, dtypes and bits."""
    assert set(found) == set(expected)
    for key, tensor in expected.items():
        assert found[key].dtype == tensor.dtype, key
        assert torch.equal(found[key], tensor), key


@torch.no_grad()
def greedy(model: Model, prompt: list[int], steps: int) -> list[int]:
    """Our greedy decoding: argmax of ``model.logits`` with a KV cache, one token at a time."""
    cache = model.new_kv_cache(1, len(prompt) + steps)
    logits = model.logits(torch.tensor([prompt]), cache=cache, last_only=True)
    tokens = []
    for _ in range(steps):
        token = int(logits[0, -1].argmax())
        tokens.append(token)
        logits = model.logits(torch.tensor([[token]]), cache=cache)
    return tokens
