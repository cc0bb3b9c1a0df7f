"""Test models for generation: a tiny random LLaMA, and one that is forced to produce a given script."""

from __future__ import annotations

import os

import torch

from tencentpretrain.models.model import Model, build_model
from tencentpretrain.tokenizers import build_tokenizer
from tests.helpers import REPO_ROOT, tiny_llama_config

SPM_PATH = os.path.join(REPO_ROOT, "tests", "assets", "tiny_spm.model")
# Rare characters (byte-fallback pieces in the tiny tokenizer) mixed with common Chinese and ASCII.
CHINESE_WITH_BYTES = "北京鬱龘好𝄞，今天天气很好 ok"


def tiny_tokenizer():
    return build_tokenizer("sentencepiece", spm_model_path=SPM_PATH)


def tiny_model(vocab_size: int, **overrides) -> Model:
    return build_model(tiny_llama_config(**overrides), vocab_size).eval()


class ScriptedModel(Model):
    """A real model whose logits are pushed so that the token after position p is ``script[p - start + 1]``:
    it still runs the KV cache, but its output is known in advance."""

    def setup(self, script: list[int], prompt_length: int) -> ScriptedModel:
        self.script, self.prompt_length = script, prompt_length
        return self

    def logits(self, src, seg=None, *, positions=None, cache=None, last_only=False):
        out = super().logits(src, seg, positions=positions, cache=cache, last_only=last_only)
        if positions is None:
            positions = torch.arange(src.shape[1]).expand(src.shape[0], -1)
        pos = positions[:, -out.shape[1] :]  # (B, T) positions of the returned logits
        index = (pos - self.prompt_length + 1).clamp(min=0, max=len(self.script) - 1)
        boost = torch.zeros_like(out)
        boost.scatter_(-1, torch.tensor(self.script)[index][..., None], 1e4)
        return out + boost


def scripted_model(vocab_size: int, script: list[int], prompt_length: int) -> ScriptedModel:
    model = ScriptedModel(tiny_llama_config(), vocab_size)
    model.init_weights()
    return model.eval().setup(script, prompt_length)
