"""Regenerate ``tests/assets/original_finetune/``: a classifier fine-tuned by the ORIGINAL TencentPretrain and the
predictions its infer script wrote, and a classifier fine-tuned by US with the predictions the original's infer
script wrote for it. tests/finetune/test_parity.py checks that our run_classifier_infer loads both strictly and
writes the same labels, logits and probabilities.

    git -C <mirror of Tencent/TencentPretrain> archive HEAD | tar -x -C /tmp/orig   # mkdir /tmp/orig first
    python tests/assets/make_original_finetune.py --original /tmp/orig

Everything is of our own making and tiny: a sentiment-like TSV from the fine-tuning tests' generator
(tests/finetune/conftest.py), a character vocabulary of its characters after BERT's special tokens, and a BERT with
hidden size 32 and 2 layers. The original's scripts run with this Python from the ``--original`` directory (they open
``models/special_tokens_map.json`` relative to the working directory). Both fine-tuning runs start from the same
random initialisation, made by our code with seed 7 and given as --pretrained_model_path (with the head keys; the
original initialises biases with N(0, 0.02) where we use zeros, and from its own initialisation it learns nothing
in these few steps). The config has no dropout, so the two runs see the same batches and differ only by rounding
(the original, with dropout 0.1 and these flags, stayed at chance and predicted one label for everything); the
tests compare files written together, so a rerun may change the weights slightly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(__file__).resolve().parent / "original_finetune"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CONFIG = {
    "emb_size": 32, "feedforward_size": 64, "hidden_size": 32, "hidden_act": "gelu", "heads_num": 2,
    "layers_num": 2, "max_seq_length": 64, "dropout": 0.0, "data_processor": "bert",
    "embedding": ["word", "pos", "seg"], "encoder": "transformer", "mask": "fully_visible", "target": ["mlm", "sp"],
    "tie_weights": True,
}
# The flags both programs fine-tune with (and the infer scripts read with).
SEQ_LENGTH, BATCH_SIZE = 64, 8


def write_data(out: Path) -> None:
    """train/dev TSVs (label, text_a, text_b: sentence pairs exercise both segments), the unlabelled test file,
    the vocabulary of their characters and the model config."""
    sys.path.insert(0, str(REPO))
    from tests.finetune.conftest import write_sentiment_tsv

    for name, n, seed, with_label in (("train", 160, 11, True), ("dev", 40, 12, True),
                                      ("test_nolabel", 24, 13, False)):
        write_sentiment_tsv(out / f"{name}.tsv", n, seed, pair=True, with_label=with_label)
    text = "".join((out / f"{name}.tsv").read_text(encoding="utf-8") for name in ("train", "dev", "test_nolabel"))
    chars = sorted({c for line in text.splitlines()[1:] for field in line.split("\t") for c in field}
                   - set("0123456789"))
    (out / "vocab.txt").write_text("\n".join(SPECIALS + chars) + "\n", encoding="utf-8")
    (out / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n", encoding="utf-8")


def run(script: Path, cwd: Path, flags: list[str]) -> None:
    done = subprocess.run([sys.executable, str(script), *flags], cwd=cwd, capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONPATH": ""})
    if done.returncode:
        raise SystemExit(f"{script} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def initial_weights(out: Path, path: Path) -> None:
    """A randomly initialised classifier (backbone and head) of our making, the start of both runs."""
    from tencentpretrain.checkpoint import save_file
    from tencentpretrain.config import load_model_config
    from tencentpretrain.finetune.classifier import Classifier
    from tencentpretrain.finetune.loop import set_seed
    from tencentpretrain.finetune.model import build_task_model
    from tencentpretrain.tokenizers import build_tokenizer

    set_seed(7)
    vocab_size = build_tokenizer("bert", vocab_path=str(out / "vocab.txt")).vocab_size
    model = build_task_model(Classifier, load_model_config(str(out / "config.json")), vocab_size, None, labels_num=2)
    save_file(model.state_dict(), str(path), sidecar=False)


def finetune(program_root: Path, out: Path, initial: Path, model: str) -> None:
    run(program_root / "finetune/run_classifier.py", program_root, [
        "--vocab_path", str(out / "vocab.txt"), "--config_path", str(out / "config.json"),
        "--pretrained_model_path", str(initial),
        "--train_path", str(out / "train.tsv"), "--dev_path", str(out / "dev.tsv"),
        "--output_model_path", str(out / model), "--epochs_num", "4", "--batch_size", str(BATCH_SIZE),
        "--seq_length", str(SEQ_LENGTH), "--learning_rate", "1e-3", "--seed", "7"])


def original_infer(original: Path, out: Path, model: str, prediction: str) -> None:
    run(original / "inference/run_classifier_infer.py", original, [
        "--vocab_path", str(out / "vocab.txt"), "--config_path", str(out / "config.json"),
        "--load_model_path", str(out / model), "--test_path", str(out / "test_nolabel.tsv"),
        "--prediction_path", str(out / prediction), "--labels_num", "2", "--seq_length", str(SEQ_LENGTH),
        "--batch_size", str(BATCH_SIZE), "--output_logits", "--output_prob"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--original", required=True, type=Path, help="checkout of the original TencentPretrain")
    p.add_argument("--out", type=Path, default=ASSETS)
    args = p.parse_args()
    original = args.original.resolve()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_data(out)
    with tempfile.TemporaryDirectory() as tmp:
        initial = Path(tmp) / "initial.bin"
        initial_weights(out, initial)
        finetune(original, out, initial, "original_classifier.bin")
        finetune(REPO, out, initial, "ours_classifier.bin")
    original_infer(original, out, "original_classifier.bin", "original_prediction.tsv")
    original_infer(original, out, "ours_classifier.bin", "original_prediction_of_ours.tsv")
    sizes = {f.name: f.stat().st_size for f in sorted(out.iterdir())}
    print(json.dumps(sizes, indent=1), f"total {sum(sizes.values())} bytes", sep="\n")


if __name__ == "__main__":
    main()
