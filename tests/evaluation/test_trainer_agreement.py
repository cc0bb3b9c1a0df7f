"""The trainer's evaluation is ``evaluate_dataset_loss``, the function scripts/evaluate_ppl.py reports: the same
loss on the same data, plain cross-entropy even when training smooths its labels."""

from __future__ import annotations

import math

import pytest

from tencentpretrain.convert.loading import load_model
from tencentpretrain.data.builder import build_dataset
from tencentpretrain.data.config import DataConfig
from tencentpretrain.data.loader import BatchLoader
from tencentpretrain.evaluation.perplexity import PerplexityConfig, evaluate_dataset_loss, evaluate_perplexity
from tencentpretrain.tokenizers import TokenizerConfig, build_tokenizer
from tencentpretrain.training.cli import main as pretrain_main
from tests.helpers import REPO_ROOT

SPM = f"{REPO_ROOT}/tests/assets/tiny_spm.model"
CONFIG = f"{REPO_ROOT}/models/llama/tiny_config.json"
DOCS = [
    "中国的首都是北京，上海是中国最大的城市。",
    "The quick brown fox jumps over the lazy dog.",
    "短文",
    "自然语言处理是人工智能的一个重要方向。",
    "今天天气很好，我们去公园散步吧。",
]


@pytest.mark.slow
def test_trainer_eval_loss_is_evaluate_dataset_loss(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    dataset = str(tmp_path / "eval.pt")
    # Every document fits one record (<s> ids </s>), so the dataset scores exactly what evaluate_ppl scores
    # with a bos before and an eos after each document. 5 records in batches of 2: the last batch is partial,
    # and evaluation must still see it.
    build_dataset(DataConfig(corpus_path=str(corpus), dataset_path=dataset, seq_length=64, data_processor="lm"),
                  TokenizerConfig(spm_model_path=SPM))
    out = str(tmp_path / "model.bin")
    result = pretrain_main(["--dataset_path", dataset, "--eval_dataset_path", dataset, "--spm_model_path", SPM,
                            "--config_path", CONFIG, "--output_model_path", out, "--total_steps", "3",
                            "--eval_steps", "3", "--save_checkpoint_steps", "3", "--batch_size", "2",
                            "--learning_rate", "1e-3", "--label_smoothing", "0.1"])
    (step, trainer_loss), = result.eval_losses
    tokenizer = build_tokenizer("sentencepiece", spm_model_path=SPM)
    model = load_model(CONFIG, out, vocab_size=tokenizer.vocab_size)
    ppl = evaluate_perplexity(model, tokenizer, DOCS, PerplexityConfig(seq_length=64, add_bos=True, add_eos=True))
    assert step == 3
    assert ppl.tokens == sum(len(tokenizer.encode(d)) + 1 for d in DOCS)
    assert math.isclose(trainer_loss, ppl.loss, rel_tol=1e-5), (trainer_loss, ppl.loss)
    # The one function, on the trainer's own eval batches, gives the number the trainer reported.
    loader = BatchLoader(dataset, batch_size=2, seq_length=64, shuffle=False)
    loss_sum, tokens = evaluate_dataset_loss(model, loader.epoch_batches())
    assert tokens == ppl.tokens
    assert math.isclose(trainer_loss, loss_sum / tokens, rel_tol=1e-6), (trainer_loss, loss_sum / tokens)
