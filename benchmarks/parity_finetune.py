"""Fine-tuning parity with the original TencentPretrain: the same data, flags and initial weights given to the
original's ``finetune/run_classifier.py`` (or ``run_ner.py``) and to ours; prints the dev score of every epoch and
the test score of both (accuracy; entity F1 for NER), and their per-report training losses.

    python benchmarks/parity_finetune.py --original /tmp/orig \\
        --train_path /tmp/orig/datasets/chnsenticorp/train.tsv --dev_path /tmp/orig/datasets/chnsenticorp/dev.tsv \\
        --test_path /tmp/orig/datasets/chnsenticorp/test.tsv --vocab_path /tmp/orig/models/google_zh_vocab.txt \\
        --config_path models/bert/tiny_config.json --pretrained_model_path pretrained.bin \\
        --train_limit 2000 --epochs_num 3 --batch_size 32 --seq_length 128 --learning_rate 2e-4
    python benchmarks/parity_finetune.py --original /tmp/orig --task ner \
        --label2id_path /tmp/orig/datasets/msra_ner/label2id.json --train_path ... (MSRA-NER TSVs)

``--original`` is a checkout of the original (``git -C <mirror> archive HEAD | tar -x -C /tmp/orig``); its scripts
run with this Python from that directory (they open ``models/special_tokens_map.json`` relative to the working
directory). The initial weights are built once by our code (the pretrained backbone of
``--pretrained_model_path`` if given, else a random initialisation; the classifier head freshly initialised with
``--seed``) and written with the head keys ``output_layer_1/2``, so both programs start from identical weights
(the original loads them with ``strict=False``, ours checks them). With ``--dropout 0`` the two runs see the same
batches in the same order (both shuffle with Python's ``random`` seeded by ``--seed``) and differ only by
floating-point rounding. Logs and models stay in ``--work_dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCORES = {  # the report line each task logs per evaluation, and the score in it
    "classifier": re.compile(r"Acc\. \(Correct/Total\): ([0-9.]+)"),
    "ner": re.compile(r"Report precision, recall, and f1:[^\n]*\n[^\n]*?[0-9.]+, [0-9.]+, ([0-9.]+)"),
}
AVG_LOSS = re.compile(r"Avg loss: ([0-9.]+)")


@dataclass
class RunResult:
    name: str
    seconds: float
    dev: list[float] = field(default_factory=list)  # one per epoch
    test: float | None = None
    losses: list[float] = field(default_factory=list)  # one per --report_steps


def parse_log(name: str, task: str, text: str, seconds: float, epochs: int, with_test: bool) -> RunResult:
    scores = [float(s) for s in SCORES[task].findall(text)]
    if len(scores) != epochs + with_test:
        raise SystemExit(f"{name}: expected {epochs + with_test} score lines, found {len(scores)}; its log:\n"
                         + text[-3000:])
    return RunResult(name, seconds, scores[:epochs], scores[-1] if with_test else None,
                     [float(v) for v in AVG_LOSS.findall(text)])


def slice_tsv(path: str, limit: int | None, out: Path) -> str:
    """The header and the first ``limit`` data lines of ``path`` (all when ``limit`` is None)."""
    if limit is None:
        return path
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    out.write_text("\n".join(lines[: limit + 1]) + "\n", encoding="utf-8")
    return str(out)


def run_config(args: argparse.Namespace, work: Path) -> str:
    """The model config both programs read: ``--config_path`` with ``--dropout`` applied when given."""
    config = json.loads(Path(args.config_path).read_text(encoding="utf-8"))
    if args.dropout is not None:
        config["dropout"] = args.dropout
    path = work / "config.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return str(path)


def initial_weights(args: argparse.Namespace, config_path: str, out: Path) -> str:
    """Our task model's initial weights (backbone + head), saved once for both programs."""
    sys.path.insert(0, str(REPO))
    from tencentpretrain.checkpoint import save_file
    from tencentpretrain.config import load_model_config
    from tencentpretrain.finetune.classifier import Classifier
    from tencentpretrain.finetune.loop import set_seed
    from tencentpretrain.finetune.model import build_task_model
    from tencentpretrain.finetune.ner import NerTagger
    from tencentpretrain.tokenizers import build_tokenizer

    set_seed(args.seed)
    vocab_size = build_tokenizer("bert", vocab_path=args.vocab_path).vocab_size
    if args.task == "ner":  # the label2id file's tags and [PAD]
        head = {"labels_num": len(json.loads(Path(args.label2id_path).read_text(encoding="utf-8"))) + 1}
        model_class = NerTagger
    else:
        model_class, head = Classifier, {"labels_num": args.labels_num}
    model = build_task_model(model_class, load_model_config(config_path), vocab_size, args.pretrained_model_path,
                             **head)
    save_file(model.state_dict(), str(out), sidecar=False)
    return str(out)


def run(name: str, script: Path, cwd: Path, flags: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        done = subprocess.run([sys.executable, str(script), *flags], cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                              check=False, env={**os.environ, "PYTHONPATH": ""})
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{name} failed (exit {done.returncode}); its log: {log}\n"
                         + log.read_text(encoding="utf-8")[-3000:])
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--original", required=True, help="checkout of the original TencentPretrain")
    p.add_argument("--task", choices=("classifier", "ner"), default="classifier")
    p.add_argument("--label2id_path", help="NER: the tag -> id JSON file")
    for name in ("train_path", "dev_path", "vocab_path", "config_path"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--test_path")
    p.add_argument("--pretrained_model_path", help="pretrained backbone (default: random initialisation)")
    p.add_argument("--train_limit", type=int, help="use the first N training lines")
    p.add_argument("--dev_limit", type=int)
    p.add_argument("--test_limit", type=int)
    p.add_argument("--dropout", type=float, help="override the config's dropout (0: identical batches and masks)")
    p.add_argument("--labels_num", type=int, default=2)
    p.add_argument("--epochs_num", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seq_length", type=int, default=128)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--report_steps", type=int, default=10)
    p.add_argument("--work_dir", help="keep logs and models here (default: a new temporary directory)")
    p.add_argument("--only", choices=("original", "ours"), help="run one program only")
    p.add_argument("--our_defaults", action="store_true",
                   help="run ours without --original_dropout: its cheaper dropout masks and no padding work, so "
                        "the runs differ by their masks (by default ours draws the original's masks)")
    args = p.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="parity_finetune_"))
    work.mkdir(parents=True, exist_ok=True)
    train = slice_tsv(args.train_path, args.train_limit, work / "train.tsv")
    dev = slice_tsv(args.dev_path, args.dev_limit, work / "dev.tsv")
    test = slice_tsv(args.test_path, args.test_limit, work / "test.tsv") if args.test_path else None
    config = run_config(args, work)
    init = initial_weights(args, config, work / "initial.bin")
    flags = ["--vocab_path", args.vocab_path, "--config_path", config, "--pretrained_model_path", init,
             "--train_path", train, "--dev_path", dev, *(["--test_path", test] if test else []),
             "--epochs_num", str(args.epochs_num), "--batch_size", str(args.batch_size),
             "--seq_length", str(args.seq_length), "--learning_rate", str(args.learning_rate),
             "--seed", str(args.seed), "--report_steps", str(args.report_steps),
             *(["--label2id_path", args.label2id_path] if args.task == "ner" else [])]
    script = f"finetune/run_{args.task}.py"
    programs = {"original": (Path(args.original).resolve() / script, Path(args.original)),
                "ours": (REPO / script, REPO)}
    results = []
    for name, (script, cwd) in programs.items():
        if args.only and name != args.only:
            continue
        log = work / f"{name}.log"
        ours_only = ["--original_dropout"] if name == "ours" and not args.our_defaults else []
        seconds = run(name, script, cwd, [*flags, *ours_only, "--output_model_path", str(work / f"{name}.bin")], log)
        results.append(parse_log(name, args.task, log.read_text(encoding="utf-8"), seconds, args.epochs_num,
                                 bool(test)))
        print(f"{name}: done in {seconds:.0f} s, log {log}", flush=True)

    print(f"\nwork dir {work}; train {train}; dropout {args.dropout if args.dropout is not None else 'config'}")
    print("| program | " + " | ".join(f"dev epoch {i + 1}" for i in range(args.epochs_num)) + " | test | seconds |")
    print("|---" * (args.epochs_num + 3) + "|")
    for r in results:
        test_cell = f"{100 * r.test:.2f}" if r.test is not None else "-"
        print(f"| {r.name} | " + " | ".join(f"{100 * d:.2f}" for d in r.dev) + f" | {test_cell} | {r.seconds:.0f} |")
    if len(results) == 2:
        a, b = results
        gaps = [abs(x - y) for x, y in zip(a.losses, b.losses)]
        print(f"training losses ({len(gaps)} reports): largest |original - ours| = {max(gaps, default=0):.3f}")
        print("  original:", " ".join(f"{v:.3f}" for v in a.losses))
        print("  ours:    ", " ".join(f"{v:.3f}" for v in b.losses))
        if a.test is not None and b.test is not None:
            print(f"test score gap: {100 * abs(a.test - b.test):.2f} points")


if __name__ == "__main__":
    main()
