"""The converter entry points, end to end on files: HF dir -> TencentPretrain -> HF dir -> same logits."""

import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # every test runs the converter scripts as processes

transformers = pytest.importorskip("transformers")


def test_gpt2_scripts_round_trip(tmp_path):
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=32)).eval()
    hf.save_pretrained(tmp_path / "hf")
    run = lambda *a: subprocess.run([sys.executable, *a], check=True, cwd=REPO_ROOT, capture_output=True)  # noqa: E731
    run("scripts/convert_gpt2_from_huggingface_to_tencentpretrain.py", "--input_model_path", str(tmp_path / "hf"),
        "--output_model_path", str(tmp_path / "tp.bin"), "--output_config_path", str(tmp_path / "tp.json"))
    run("scripts/convert_gpt2_from_tencentpretrain_to_huggingface.py", "--input_model_path", str(tmp_path / "tp.bin"),
        "--config_path", str(tmp_path / "tp.json"), "--output_model_path", str(tmp_path / "back"))
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits)


def test_roberta_scripts_round_trip(tmp_path):
    config = transformers.RobertaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=34, type_vocab_size=1)
    hf = transformers.RobertaForMaskedLM(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    run = lambda *a: subprocess.run([sys.executable, *a], check=True, cwd=REPO_ROOT, capture_output=True)  # noqa: E731
    run("scripts/convert_roberta_from_huggingface_to_tencentpretrain.py", "--input_model_path",
        str(tmp_path / "hf"), "--output_model_path", str(tmp_path / "tp.bin"), "--output_config_path",
        str(tmp_path / "tp.json"))
    run("scripts/convert_roberta_from_tencentpretrain_to_huggingface.py", "--input_model_path",
        str(tmp_path / "tp.bin"), "--config_path", str(tmp_path / "tp.json"), "--output_model_path",
        str(tmp_path / "back"))
    back = transformers.RobertaForMaskedLM.from_pretrained(tmp_path / "back").eval()
    ids = torch.randint(3, 97, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits)
