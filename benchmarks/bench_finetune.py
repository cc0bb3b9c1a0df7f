"""Fine-tuning throughput: our run_classifier training loop vs the original TencentPretrain's run_classifier loop
and the Hugging Face ``Trainer`` with ``BertForSequenceClassification``; same model size, data, batch size and
sequence length, interleaved in one process (identical runs on a shared machine differ by 15-25%, so only the ratio
of interleaved rounds means something).

    python benchmarks/bench_finetune.py --original /tmp/orig            # ChnSentiCorp + google_zh_vocab from it
    python benchmarks/bench_finetune.py                                  # generated data; the original is skipped
    TENCENTPRETRAIN_ORIGINAL=/tmp/orig python benchmarks/bench_finetune.py --rounds 5 --steps 10

The model is the original's models/bert/tiny_config.json (hidden 128, 2 layers, 2 heads, ffn 512) unless told
otherwise. Each round times ``--steps`` optimizer steps of each program, from the raw examples to the updated
weights, as each program does it:

- ours: ``tencentpretrain.finetune.loop.train_epoch`` over ``steps * batch_size`` examples (shuffle, padding to
  the batch's longest example, forward with the encoder skipping the padding and cheap dropout masks, backward,
  the original's AdamW without bias correction, schedule, the per-step loss for the report lines);
- ours_exact (asked for with --programs): the same under ``--original_dropout`` (torch's dropout masks over
  batches padded to --seq_length, as the original draws them);
- original: its run_classifier loop body (shuffle, LongTensors padded to --seq_length, ``train_model``,
  ``loss.item()``), importing the original's modules from ``--original`` (or $TENCENTPRETRAIN_ORIGINAL);
- hf: ``transformers.Trainer.train()`` with ``max_steps = steps`` (its torch AdamW, padding to the batch's longest
  with DataCollatorWithPadding; no logging, saving or evaluation), timed from its ``on_train_begin`` to its
  ``on_train_end`` callback (the Trainer's construction is not counted).

All three start from the same weights where the layouts allow it (ours and the original load the same file; HF's
BERT is initialised by transformers). Prints examples/s (min / median / max over rounds) and the ratios of medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tencentpretrain.checkpoint import save_file
from tencentpretrain.config import load_model_config
from tencentpretrain.finetune.classifier import Classifier, collate_for, read_classification
from tencentpretrain.finetune.loop import LocalStepper, set_seed, train_epoch
from tencentpretrain.finetune.model import build_task_model
from tencentpretrain.finetune.options import FinetuneOptimConfig, FinetuneOptions
from tencentpretrain.layers.dropout import use_torch_dropout
from tencentpretrain.tokenizers import build_tokenizer

Step = Callable[[int], float | None]  # runs n optimizer steps; may return the seconds they took
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# ---------------------------------------------------------------------- data
def generated_data(work: Path, n: int, seed: int = 0) -> tuple[str, str]:
    """A labelled TSV of ``n`` random character sentences (20..300 characters) and its character vocabulary."""
    rng = random.Random(seed)
    alphabet = [chr(0x4E00 + i) for i in range(3000)]
    lines = ["label\ttext_a"]
    for _ in range(n):
        lines.append(f"{rng.randint(0, 1)}\t" + "".join(rng.choices(alphabet, k=rng.randint(20, 300))))
    (work / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (work / "vocab.txt").write_text("\n".join(SPECIALS + alphabet) + "\n", encoding="utf-8")
    return str(work / "train.tsv"), str(work / "vocab.txt")


def first_lines(path: str, n: int, out: Path) -> str:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    out.write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    return str(out)


# ---------------------------------------------------------------------- ours
def ours(args: argparse.Namespace, train_path: str, init_path: str, *, original_dropout: bool = False) -> Step:
    tokenizer = build_tokenizer("bert", vocab_path=args.vocab_path)
    config = load_model_config(args.config_path)
    model = build_task_model(Classifier, config, tokenizer.vocab_size, init_path, labels_num=2)
    examples = read_classification(train_path, tokenizer, args.seq_length, labels_num=2)
    options = FinetuneOptions(train_path=train_path, dev_path=train_path, batch_size=args.batch_size,
                              seq_length=args.seq_length, report_steps=10**9)
    optim = FinetuneOptimConfig(learning_rate=args.learning_rate)
    stepper = LocalStepper(model, collate=collate_for(tokenizer), optim=optim, adv=None, steps=10**6,
                           device=torch.device("cpu"))
    shuffle = random.Random(7)
    model.train()
    model.original_mask_width = args.seq_length if original_dropout else None

    def step(n: int) -> None:
        use_torch_dropout(original_dropout)
        try:
            train_epoch(stepper, examples[: n * args.batch_size], 1, options=options, rng=shuffle)
        finally:
            use_torch_dropout(False)

    return step


def ours_exact(args: argparse.Namespace, train_path: str, init_path: str) -> Step:
    """Ours under ``--original_dropout``: torch's dropout over batches padded to --seq_length, no padding skipped."""
    return ours(args, train_path, init_path, original_dropout=True)


# ---------------------------------------------------------------------- the original
@contextlib.contextmanager
def original_modules(root: Path) -> Iterator[None]:
    """Import the original's ``tencentpretrain`` package (same name as ours) while inside; its modules stay
    reachable from what was imported, and ours are restored on exit. Its constants module opens
    ``models/special_tokens_map.json`` relative to the working directory, so the directory is ``root`` inside."""
    ours_saved = {k: v for k, v in sys.modules.items() if k == "tencentpretrain" or k.startswith("tencentpretrain.")}
    for k in ours_saved:
        del sys.modules[k]
    cwd, path = os.getcwd(), list(sys.path)
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(root / "finetune"))
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        for k in [k for k in sys.modules if k == "tencentpretrain" or k.startswith("tencentpretrain.")]:
            del sys.modules[k]
        sys.modules.update(ours_saved)


def original(args: argparse.Namespace, train_path: str, init_path: str) -> Step:
    root = Path(args.original).resolve()
    flags = ["--vocab_path", args.vocab_path, "--config_path", args.config_path, "--train_path", train_path,
             "--dev_path", train_path, "--pretrained_model_path", init_path, "--batch_size", str(args.batch_size),
             "--seq_length", str(args.seq_length), "--learning_rate", str(args.learning_rate)]
    with original_modules(root):
        import run_classifier as rc  # the original's finetune/run_classifier.py
        from tencentpretrain.opts import adv_opts, finetune_opts, tokenizer_opts
        from tencentpretrain.utils import str2tokenizer
        from tencentpretrain.utils.config import load_hyperparam

        parser = argparse.ArgumentParser()
        finetune_opts(parser)
        tokenizer_opts(parser)
        adv_opts(parser)
        parser.add_argument("--soft_targets", action="store_true")
        parser.add_argument("--soft_alpha", type=float, default=0.5)
        argv = sys.argv
        sys.argv = ["run_classifier.py", *flags]  # load_hyperparam reads the command line from sys.argv
        try:
            a = load_hyperparam(parser.parse_args(flags))
        finally:
            sys.argv = argv
        a.labels_num = 2
        a.tokenizer = str2tokenizer[a.tokenizer](a)
        a.device = torch.device("cpu")
        model = rc.Classifier(a)
        rc.load_or_initialize_parameters(a, model)
        trainset = rc.read_dataset(a, train_path)
        a.train_steps = 10**6
        optimizer, scheduler = rc.build_optimizer(a, model)
    shuffle = random.Random(7)

    def step(n: int) -> None:
        data = trainset[: n * args.batch_size]
        shuffle.shuffle(data)  # the loop body of its main(), per epoch
        src = torch.LongTensor([e[0] for e in data])
        tgt = torch.LongTensor([e[1] for e in data])
        seg = torch.LongTensor([e[2] for e in data])
        model.train()
        total = 0.0
        for src_b, tgt_b, seg_b, soft_b in rc.batch_loader(args.batch_size, src, tgt, seg, None):
            loss = rc.train_model(a, model, optimizer, scheduler, src_b, tgt_b, seg_b, soft_b)
            total += loss.item()

    return step


# ---------------------------------------------------------------------- transformers
def hf(args: argparse.Namespace, train_path: str, init_path: str) -> Step:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tokenizer = build_tokenizer("bert", vocab_path=args.vocab_path)
    config = load_model_config(args.config_path)
    examples = read_classification(train_path, tokenizer, args.seq_length, labels_num=2)
    rows = [{"input_ids": e["src"], "attention_mask": [1] * len(e["src"]), "labels": e["label"]} for e in examples]
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.layers_num,
        num_attention_heads=config.heads_num, intermediate_size=config.feedforward_size,
        max_position_embeddings=config.max_seq_length, hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout, num_labels=2, attn_implementation="sdpa"))

    class PadWith:  # DataCollatorWithPadding needs a tokenizer-like object only for .pad()
        def pad(self, features, **kwargs):
            width = max(len(f["input_ids"]) for f in features)
            return {"input_ids": torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]),
                    "attention_mask": torch.tensor([f["attention_mask"] + [0] * (width - len(f["attention_mask"]))
                                                    for f in features]),
                    "labels": torch.tensor([f["labels"] for f in features])}

    class Clock(TrainerCallback):  # times the training loop itself, not the Trainer's construction
        def on_train_begin(self, *a, **k):
            self.start = CLOCK()

        def on_train_end(self, *a, **k):
            self.seconds = CLOCK() - self.start

    out = tempfile.mkdtemp(prefix="bench_finetune_hf_")

    def step(n: int) -> float:
        training_args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=n, learning_rate=args.learning_rate,
            report_to=[], save_strategy="no", logging_strategy="no", eval_strategy="no", use_cpu=True,
            disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False, seed=7, warmup_steps=0)
        clock = Clock()
        trainer = Trainer(model=model, args=training_args, train_dataset=rows[: n * args.batch_size],
                          data_collator=DataCollatorWithPadding(PadWith()), callbacks=[clock])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        return clock.seconds

    return step


# ---------------------------------------------------------------------- main
CLOCK: Callable[[], float] = time.perf_counter  # --clock cpu: time.process_time


def measure(step: Step, examples: int, steps: int) -> float:
    start = CLOCK()
    seconds = step(steps)
    return examples / (seconds if seconds is not None else CLOCK() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--original", default=os.environ.get("TENCENTPRETRAIN_ORIGINAL"),
                   help="checkout of the original TencentPretrain (default: $TENCENTPRETRAIN_ORIGINAL)")
    p.add_argument("--train_path", help="a labelled TSV (default: ChnSentiCorp from --original, else generated)")
    p.add_argument("--vocab_path", help="default: the original's models/google_zh_vocab.txt, else generated")
    p.add_argument("--config_path", help="default: the original's models/bert/tiny_config.json, or an equal one")
    p.add_argument("--seq_length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each program first")
    p.add_argument("--programs", nargs="+", default=["ours", "original", "hf"],
                   choices=["ours", "ours_exact", "original", "hf"],
                   help="ours_exact: ours with --original_dropout (the original's dropout masks)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: this process's CPU seconds (all threads) instead of wall-clock seconds; with "
                        "--threads 1 it hardly depends on what else runs on a shared machine")
    args = p.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    root = Path(args.original).resolve() if args.original else None
    if root is None and "original" in args.programs:
        print("original: skipped (give --original or $TENCENTPRETRAIN_ORIGINAL: a checkout of TencentPretrain)")
        args.programs = [name for name in args.programs if name != "original"]
    chnsenticorp = root / "datasets/chnsenticorp/train.tsv" if root else None
    needed = args.steps * args.batch_size
    if args.train_path is None and chnsenticorp is not None and chnsenticorp.exists():
        args.train_path = str(chnsenticorp)
        args.vocab_path = args.vocab_path or str(root / "models/google_zh_vocab.txt")
    if args.train_path is None:
        args.train_path, generated_vocab = generated_data(work, needed)
        args.vocab_path = args.vocab_path or generated_vocab
    if args.config_path is None:
        tiny = {"emb_size": 128, "feedforward_size": 512, "hidden_size": 128, "hidden_act": "gelu", "heads_num": 2,
                "layers_num": 2, "max_seq_length": 512, "dropout": 0.1, "embedding": ["word", "pos", "seg"],
                "encoder": "transformer", "mask": "fully_visible", "target": ["mlm", "sp"], "tie_weights": True}
        args.config_path = str(work / "config.json")
        Path(args.config_path).write_text(json.dumps(tiny), encoding="utf-8")
    train_path = first_lines(args.train_path, needed, work / "bench_train.tsv")

    set_seed(7)
    vocab_size = build_tokenizer("bert", vocab_path=args.vocab_path).vocab_size
    init = build_task_model(Classifier, load_model_config(args.config_path), vocab_size, None, labels_num=2)
    init_path = str(work / "initial.bin")
    save_file(init.state_dict(), init_path, sidecar=False)

    builders = {"ours": ours, "ours_exact": ours_exact, "original": original, "hf": hf}
    steps = {name: builders[name](args, train_path, init_path) for name in args.programs}
    config = load_model_config(args.config_path)
    print(f"data {args.train_path} (first {needed} lines), vocab {vocab_size}; hidden {config.hidden_size}, layers "
          f"{config.layers_num}, heads {config.heads_num}, ffn {config.feedforward_size}; seq_length "
          f"{args.seq_length}, batch {args.batch_size}; {args.steps} steps x {args.rounds} rounds, {args.clock} clock; "
          f"torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for step in steps.values():
        step(args.warmup)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            rates[name].append(measure(step, needed, args.steps))
    for name, r in rates.items():
        print(f"  {name:8s} examples/s min {min(r):7.1f}  median {statistics.median(r):7.1f}  max {max(r):7.1f}")
    for other in ("ours_exact", "original", "hf"):
        if "ours" in rates and other in rates:
            print(f"  ratio ours/{other} (medians): "
                  f"{statistics.median(rates['ours']) / statistics.median(rates[other]):.3f}")


if __name__ == "__main__":
    main()
