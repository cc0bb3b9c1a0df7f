"""Check run_cmrc / run_c3 / run_chid against the original TencentPretrain, both ways (docs/finetune.md).

Fine-tunes tiny BERTs here and with the original on the synthetic data of tests/finetune, predicts every model with
both frameworks' infer scripts and compares the prediction files byte for byte, then compares the logits of the
models fine-tuned here on the original's inputs. Needs a checkout of the original and a Python that runs it:

    git -C <original repo> archive HEAD finetune inference tencentpretrain models | tar -x -C /tmp/orig
    .venv/bin/python benchmarks/compare_original_mrc.py --original /tmp/orig --original_python .venv/bin/python

(``--original_logits_of`` is internal: the same script run by the original's Python, from the original's tree.)
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = {  # task: (finetune flags, infer flags, prediction file)
    "cmrc": (["--seq_length", "32", "--doc_stride", "8", "--learning_rate", "2e-3"],
             ["--seq_length", "32", "--doc_stride", "8"], "json"),
    "c3": (["--seq_length", "40", "--learning_rate", "1e-4"], ["--seq_length", "40"], "jsonl"),
    "chid": (["--seq_length", "32", "--max_choices_num", "4", "--learning_rate", "3e-4"],
             ["--seq_length", "32", "--max_choices_num", "4"], "json"),
}


def write_data(d: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.finetune.conftest import FILLER, NEGATIVE, POSITIVE, SPECIALS, TINY_BERT
    from tests.finetune.test_cmrc import write_cmrc
    from tests.finetune.test_multiple_choice import write_c3, write_chid

    chars = sorted(set(POSITIVE + NEGATIVE + FILLER + "0123456789，。！？"))
    (d / "vocab.txt").write_text("\n".join(SPECIALS + chars) + "\n", encoding="utf-8")
    (d / "config.json").write_text(json.dumps({**TINY_BERT, "data_processor": "bert"}))
    write_cmrc(d / "cmrc_train.json", 120, 1, (30, 45))
    write_cmrc(d / "cmrc_dev.json", 40, 2, (30, 45))
    write_c3(d / "c3_train.json", 160, 1)
    write_c3(d / "c3_dev.json", 40, 2)
    write_chid(d / "chid_train.json", d / "chid_train_answer.json", 120, 1)
    write_chid(d / "chid_dev.json", d / "chid_dev_answer.json", 30, 2, first_tag=1000)


def data_flags(d: Path, task: str, split: str) -> list[str]:
    flags = ["--vocab_path", str(d / "vocab.txt"), "--config_path", str(d / "config.json")]
    if split == "train":
        flags += ["--train_path", str(d / f"{task}_train.json"), "--dev_path", str(d / f"{task}_dev.json")]
        if task == "chid":
            flags += ["--train_answer_path", str(d / "chid_train_answer.json"),
                      "--dev_answer_path", str(d / "chid_dev_answer.json")]
    else:
        flags += ["--test_path", str(d / f"{task}_dev.json")]
    return flags


def run(python: str, cwd: Path, script: str, flags: list[str]) -> None:
    subprocess.run([python, f"{script}", *flags], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def compare(original: Path, original_python: str, d: Path) -> None:
    ours_python = sys.executable
    for task, (train_flags, infer_flags, ext) in TASKS.items():
        for trainer, python, cwd in (("ours", ours_python, ROOT), ("orig", original_python, original)):
            model = d / f"{task}_{trainer}.bin"
            run(python, cwd, f"finetune/run_{task}.py", data_flags(d, task, "train") + train_flags + [
                "--output_model_path", str(model), "--epochs_num", "1", "--batch_size", "16"])
            outputs = []
            for predictor, p, c in (("ours", ours_python, ROOT), ("orig", original_python, original)):
                outputs.append(d / f"{task}_{trainer}_model_{predictor}_infer.{ext}")
                run(p, c, f"inference/run_{task}_infer.py", data_flags(d, task, "test") + infer_flags + [
                    "--load_model_path", str(model), "--prediction_path", str(outputs[-1]), "--batch_size", "64"])
            same = filecmp.cmp(*outputs, shallow=False)
            print(f"{task}: model fine-tuned by {trainer}: predictions {'identical' if same else 'DIFFER'}")
    subprocess.run([original_python, str(Path(__file__).resolve()), "--original_logits_of", str(d)], cwd=original,
                   check=True, stdout=subprocess.DEVNULL)
    our_logits(d)


def original_logits(d: Path) -> None:
    """Run by the original's Python in the original's tree: its readers and models on our fine-tuned models."""
    import torch

    sys.path.insert(0, os.getcwd())
    from tencentpretrain.model_loader import load_model
    from tencentpretrain.opts import infer_opts, tokenizer_opts
    from tencentpretrain.utils.config import load_hyperparam
    from tencentpretrain.utils.tokenizers import BertTokenizer, CharTokenizer

    import finetune.run_c3 as c3
    import finetune.run_chid as chid
    import finetune.run_cmrc as cmrc

    def args_for(seq_length: int):
        parser = argparse.ArgumentParser()
        infer_opts(parser)
        tokenizer_opts(parser)
        parser.add_argument("--doc_stride", type=int, default=8)
        parser.add_argument("--max_choices_num", type=int, default=4)
        argv = ["--vocab_path", str(d / "vocab.txt"), "--config_path", str(d / "config.json"), "--test_path", "-",
                "--prediction_path", "-", "--seq_length", str(seq_length)]
        sys.argv = [sys.argv[0], *argv]  # load_hyperparam reads the command line's flags from sys.argv
        return load_hyperparam(parser.parse_args(argv))

    out = {}
    with torch.no_grad():
        a = args_for(32)
        a.tokenizer = CharTokenizer(a)
        model = load_model(cmrc.MachineReadingComprehension(a), str(d / "cmrc_ours.bin")).eval()
        data, _ = cmrc.read_dataset(a, str(d / "cmrc_dev.json"))
        zeros = torch.zeros(len(data), dtype=torch.long)
        _, start, end = model(torch.LongTensor([s[0] for s in data]), torch.LongTensor([s[1] for s in data]),
                              zeros, zeros)
        out["cmrc"] = torch.stack([start, end], -1)
        for task, seq_length, tokenizer in (("c3", 40, BertTokenizer), ("chid", 32, CharTokenizer)):
            a = args_for(seq_length)
            a.tokenizer = tokenizer(a)
            model = load_model(c3.MultipleChoice(a), str(d / f"{task}_ours.bin")).eval()
            data = (c3.read_dataset(a, str(d / "c3_dev.json")) if task == "c3"
                    else chid.read_dataset(a, str(d / "chid_dev.json"), None))
            out[task] = model(torch.LongTensor([e[0] for e in data]), None, torch.LongTensor([e[2] for e in data]))[1]
            out[f"{task}_src"] = [e[0] for e in data]
    torch.save(out, d / "original_logits.pt")


def our_logits(d: Path) -> None:
    import torch

    from tencentpretrain.config import load_model_config
    from tencentpretrain.finetune import cmrc
    from tencentpretrain.finetune import multiple_choice as mc
    from tencentpretrain.finetune.loop import predict
    from tencentpretrain.finetune.model import load_finetuned_weights
    from tencentpretrain.tokenizers import build_tokenizer

    original = torch.load(d / "original_logits.pt")
    config = load_model_config(str(d / "config.json"))
    char = build_tokenizer("char", vocab_path=str(d / "vocab.txt"))
    bert = build_tokenizer("bert", vocab_path=str(d / "vocab.txt"))

    def logits(model, path: str, examples, collate):
        load_finetuned_weights(model, str(d / path))
        return torch.cat([batch for _, batch in predict(model, examples, 16, collate)])

    windows = cmrc.build_windows(cmrc.read_cmrc(str(d / "cmrc_dev.json"), check_spans=False), char, 32, 8,
                                 with_targets=False, path="cmrc_dev.json")
    ours = logits(cmrc.MachineReadingComprehension(config, char.vocab_size), "cmrc_ours.bin", windows,
                  cmrc.collate_for(char))
    real = torch.tensor([w["seg"] for w in windows]) > 0
    gap = (ours - original["cmrc"]).abs()
    prob_gap = (ours.softmax(1) - original["cmrc"].softmax(1)).abs().max().item()
    print(f"cmrc logits: real tokens {gap[real].max().item():.1e}, padding {gap[~real].max().item():.1e}, "
          f"start/end probabilities {prob_gap:.1e}")
    c3_examples = mc.read_c3(str(d / "c3_dev.json"), bert, 40, 4)
    ours = logits(mc.MultipleChoice(config, bert.vocab_size), "c3_ours.bin", c3_examples,
                  lambda e: mc.collate_choices(e, 0))
    print(f"c3 logits: {(ours - original['c3']).abs().max().item():.1e}")
    chid_examples = mc.read_chid(str(d / "chid_dev.json"), None, char, 32, 4)
    ours = logits(mc.MultipleChoice(config, char.vocab_size, segmented=False), "chid_ours.bin", chid_examples,
                  mc._unsegmented_collate)
    # the original dropped the left context of a blank in a short text (see tokens_around): those inputs differ
    different = [i for i, e in enumerate(chid_examples) if e["src"] != original["chid_src"][i]]
    keep = [i for i in range(len(chid_examples)) if i not in different]
    print(f"chid logits: {(ours - original['chid'])[keep].abs().max().item():.1e} ({len(different)} of "
          f"{len(chid_examples)} blanks left out: the original's input lost their left context)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", help="an extracted tree of the original TencentPretrain")
    parser.add_argument("--original_python", default=sys.executable, help="the Python that runs the original")
    parser.add_argument("--original_logits_of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.original_logits_of:
        original_logits(Path(args.original_logits_of))
        return
    if not args.original:
        parser.error("--original is required")
    original = Path(args.original).resolve()
    special = original / "models" / "special_tokens_map.json"
    if not special.exists():
        parser.error(f"{special} is missing: extract the original's models/ folder too")
    with tempfile.TemporaryDirectory() as tmp:
        write_data(Path(tmp))
        compare(original, args.original_python, Path(tmp))


if __name__ == "__main__":
    main()
