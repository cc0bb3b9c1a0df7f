"""Does a Chinese vocabulary extension pay off? Tokens per character and bits per character, side by side.

The recipe of docs/vocabulary.md at toy scale, end to end through the library:

1. a LLaMA-like base tokenizer (BPE, byte fallback) trained on English plus a small share of Chinese, so that
   most Chinese characters fall back to 3 byte tokens, as in LLaMA;
2. a Chinese tokenizer trained on the Chinese training split, merged into the base (``merge_tokenizers``);
3. a small LLaMA-architecture "base model" pretrained from scratch on the Chinese training split with the base
   tokenizer;
4. two continued-pretraining runs from that model with the same steps, batch and sequence length (the same
   compute): (A) with the base tokenizer, (B) with the merged tokenizer after ``resize_checkpoint`` (new rows
   = mean of their base pieces' rows); and (C) the merged tokenizer for fewer steps, so that it sees the same
   number of characters as A (the same data);
5. bits per character of both on held-out Chinese text cut into identical chunks.

    python benchmarks/bench_vocab_extension.py --zh_corpus_path data/zh_corpus.txt --en_corpus_path en.txt

It prints tokens per character before/after and the bits per character of each run, and writes them as JSON with
``--output_json``. Runs in a few minutes on two CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass

import torch

from tencentpretrain import cli
from tencentpretrain.checkpoint import load_checkpoint, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.models.model import Model, build_model
from tencentpretrain.tokenizers import build_tokenizer
from tencentpretrain.vocab.build import VocabBuildConfig, build_vocab, read_corpus_lines
from tencentpretrain.vocab.freeze import freeze_for_vocab_extension
from tencentpretrain.vocab.merge import merge_tokenizers
from tencentpretrain.vocab.resize import ResizeConfig, resize_checkpoint

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("bench_vocab_extension")


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    lr: float
    batch_size: int
    seq_length: int
    seed: int
    warmup: int = 20


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zh_corpus_path", default=os.path.join(REPO_ROOT, "data", "zh_corpus.txt"),
                   help="Chinese documents, one per line")
    p.add_argument("--en_corpus_path",
                   help="English lines for the base tokenizer (default: the mostly-ASCII lines of the corpus)")
    p.add_argument("--eval_docs", type=int, default=100, help="last N Chinese documents are held out")
    p.add_argument("--base_zh_share", type=float, default=0.01, help="share of Chinese docs the base tokenizer sees")
    p.add_argument("--base_vocab_size", type=int, default=2000)
    p.add_argument("--zh_vocab_size", type=int, default=3000)
    p.add_argument("--zh_character_coverage", type=float, default=0.995)
    p.add_argument("--config_path", default=os.path.join(REPO_ROOT, "models", "llama", "tiny_config.json"))
    p.add_argument("--hidden_size", type=int, default=128)
    p.add_argument("--layers_num", type=int, default=2)
    p.add_argument("--pretrain_steps", type=int, default=500, help="base model, base tokenizer, from scratch")
    p.add_argument("--continue_steps", type=int, default=300, help="each continued-pretraining run")
    p.add_argument("--embeddings_only_steps", type=int, default=0,
                   help="run B first trains only embedding + head for this many of its steps")
    p.add_argument("--skip_equal_chars", action="store_true",
                   help="skip run C: the extended vocabulary trained on as many characters as run A (fewer steps)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--seq_length", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--continue_lr", type=float, default=1e-3)
    p.add_argument("--eval_chunk_chars", type=int, default=40,
                   help="held-out chunk length; at most 3 byte tokens a character must fit in seq_length")
    p.add_argument("--threads", type=int, default=1, help="torch threads (more only helps on an idle machine)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--work_dir", help="keep tokenizers and checkpoints here (default: a temporary directory)")
    p.add_argument("--output_json", help="write the numbers here")
    return p.parse_args()


# ---------------------------------------------------------------------- data
def read_docs(path: str) -> list[str]:
    return [text.strip() for *_, text in read_corpus_lines([path]) if text.strip()]


def write_lines(path: str, lines: list[str]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def token_stream(tokenizer, docs: list[str]) -> torch.Tensor:
    """<s> doc </s> for every document, concatenated: (N,)."""
    ids: list[int] = []
    for doc in docs:
        ids += [tokenizer.bos_id, *tokenizer.encode(doc), tokenizer.eos_id]
    return torch.tensor(ids, dtype=torch.long)


def eval_chunks(docs: list[str], chunk_chars: int) -> list[str]:
    """Held-out text cut into identical chunks for every tokenizer."""
    return [doc[i:i + chunk_chars] for doc in docs for i in range(0, len(doc), chunk_chars)]


# ---------------------------------------------------------------------- training and evaluation
def lr_at(step: int, settings: TrainSettings) -> float:
    """Linear warmup, then cosine decay to 10%."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def train(model: Model, stream: torch.Tensor, settings: TrainSettings, *, name: str, freeze_steps: int = 0,
          original_vocab_size: int = 0) -> float:
    """AdamW on random windows of ``stream``; returns seconds taken."""
    gen = torch.Generator().manual_seed(settings.seed)
    model.train()
    start = time.time()
    freeze = freeze_for_vocab_extension(model, "embeddings", original_vocab_size) if freeze_steps else None
    optimizer = _adamw(model, settings.lr)
    for step in range(settings.steps):
        if freeze is not None and step == freeze_steps:
            for p in model.parameters():
                p.requires_grad_(True)
            optimizer = _adamw(model, settings.lr)
            freeze = None
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, settings)
        starts = torch.randint(0, len(stream) - settings.seq_length - 1, (settings.batch_size,), generator=gen)
        windows = torch.stack([stream[s:s + settings.seq_length + 1] for s in starts.tolist()])  # (B, T+1)
        src, tgt = windows[:, :-1], windows[:, 1:]
        loss = model(src, tgt, torch.ones_like(src)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == settings.steps - 1:
            logger.info("%s step %d/%d loss %.3f", name, step + 1, settings.steps, loss.item())
    return time.time() - start


def _adamw(model: Model, lr: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)


@torch.no_grad()
def bits_per_char(model: Model, tokenizer, chunks: list[str], batch_size: int = 32) -> float:
    """Sum over chunks of -log2 p(tokens of the chunk | <s>), divided by the characters of the chunks."""
    model.eval()
    total_nats, total_chars = 0.0, sum(len(c) for c in chunks)
    encoded = [[tokenizer.bos_id, *tokenizer.encode(c)] for c in chunks]
    longest = max(len(r) for r in encoded)
    if longest > model.config.max_seq_length:
        raise SystemExit(f"a held-out chunk has {longest} tokens, more than seq_length: lower --eval_chunk_chars")
    for i in range(0, len(encoded), batch_size):
        rows = encoded[i:i + batch_size]
        width = max(len(r) for r in rows)
        src = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
        seg = torch.zeros_like(src)
        for j, r in enumerate(rows):
            src[j, :len(r)] = torch.tensor(r)
            seg[j, :len(r)] = 1
        logits = model.logits(src[:, :-1], seg[:, :-1]).float()  # (B, T-1, V)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), src[:, 1:], reduction="none")  # (B, T-1)
        total_nats += (nll * seg[:, 1:]).sum().item()
    return total_nats / math.log(2) / total_chars


def tokens_per_char(tokenizer, docs: list[str]) -> float:
    return sum(len(tokenizer.encode(d)) for d in docs) / sum(len(d) for d in docs)


# ---------------------------------------------------------------------- the benchmark
def is_english(line: str) -> bool:
    return sum(c.isascii() for c in line) > 0.5 * len(line)


def build_tokenizers(args: argparse.Namespace, work: str, train_docs: list[str], eval_docs: list[str]):
    """The LLaMA-like base (English + a little Chinese), the Chinese model, and their merge."""
    rng = random.Random(args.seed)
    english = read_docs(args.en_corpus_path) if args.en_corpus_path else [d for d in train_docs if is_english(d)]
    base_zh = rng.sample(train_docs, int(len(train_docs) * args.base_zh_share))
    base_corpus = write_lines(os.path.join(work, "base_corpus.txt"), english + base_zh)
    base = build_vocab(VocabBuildConfig(corpus_paths=(base_corpus,), output_model_path=os.path.join(work, "base.model"),
                                        vocab_size=args.base_vocab_size, character_coverage=0.9995,
                                        hard_vocab_limit=False)).model_path
    zh_corpus = write_lines(os.path.join(work, "zh_train.txt"), train_docs)
    zh = build_vocab(VocabBuildConfig(corpus_paths=(zh_corpus,), output_model_path=os.path.join(work, "zh.model"),
                                      vocab_size=args.zh_vocab_size,
                                      character_coverage=args.zh_character_coverage,
                                      hard_vocab_limit=False)).model_path
    merged = os.path.join(work, "merged.model")
    report = merge_tokenizers(base, zh, merged, zh_eval_lines=eval_docs)
    return base, merged, report


def run(args: argparse.Namespace, work: str) -> dict:
    docs = read_docs(args.zh_corpus_path)
    train_docs, eval_docs = docs[:-args.eval_docs], docs[-args.eval_docs:]
    base_path, merged_path, report = build_tokenizers(args, work, train_docs, eval_docs)
    base_tok = build_tokenizer("sentencepiece", spm_model_path=base_path)
    merged_tok = build_tokenizer("sentencepiece", spm_model_path=merged_path)
    config = load_model_config(args.config_path).replace(
        emb_size=args.hidden_size, hidden_size=args.hidden_size, feedforward_size=args.hidden_size * 11 // 4,
        layers_num=args.layers_num, max_seq_length=args.seq_length,
    )
    chunks = eval_chunks(eval_docs, args.eval_chunk_chars)
    settings = TrainSettings(args.pretrain_steps, args.lr, args.batch_size, args.seq_length, args.seed)
    cont = TrainSettings(args.continue_steps, args.continue_lr, args.batch_size, args.seq_length, args.seed + 1)

    torch.manual_seed(args.seed)
    model = build_model(config, base_tok.vocab_size)
    base_stream = token_stream(base_tok, train_docs)
    seconds = train(model, base_stream, settings, name="base")
    base_ckpt = os.path.join(work, "base_model.bin")
    save_checkpoint(model, base_ckpt)
    results = {"base_model_bpc": bits_per_char(model, base_tok, chunks), "pretrain_seconds": seconds}

    seconds = train(model, base_stream, cont, name="A (base vocab)")
    results.update(a_bpc=bits_per_char(model, base_tok, chunks), a_seconds=seconds)

    merged_ckpt = os.path.join(work, "merged_model.bin")
    resize_checkpoint(ResizeConfig(input_model_path=base_ckpt, output_model_path=merged_ckpt,
                                   base_spm_model_path=base_path, spm_model_path=merged_path))
    model = build_model(config, merged_tok.vocab_size, init=False)
    load_checkpoint(model, merged_ckpt)
    results["b_bpc_at_start"] = bits_per_char(model, merged_tok, chunks)
    merged_stream = token_stream(merged_tok, train_docs)
    seconds = train(model, merged_stream, cont, name="B (extended vocab)", freeze_steps=args.embeddings_only_steps,
                    original_vocab_size=base_tok.vocab_size)
    results.update(b_bpc=bits_per_char(model, merged_tok, chunks), b_seconds=seconds)

    if not args.skip_equal_chars:  # C: extended vocabulary, as many characters as A saw (fewer steps)
        steps = round(args.continue_steps * len(merged_stream) / len(base_stream))
        model = build_model(config, merged_tok.vocab_size, init=False)
        load_checkpoint(model, merged_ckpt)
        train(model, merged_stream, TrainSettings(steps, cont.lr, cont.batch_size, cont.seq_length, cont.seed),
              name="C (extended vocab, A's characters)", freeze_steps=min(args.embeddings_only_steps, steps // 2),
              original_vocab_size=base_tok.vocab_size)
        results.update(c_steps=steps, c_bpc=bits_per_char(model, merged_tok, chunks))

    tokens_per_step = args.batch_size * args.seq_length
    results.update(
        base_vocab_size=base_tok.vocab_size, merged_vocab_size=merged_tok.vocab_size, added_pieces=report.added,
        zh_tokens_per_char_before=tokens_per_char(base_tok, eval_docs),
        zh_tokens_per_char_after=tokens_per_char(merged_tok, eval_docs),
        probe_lines_changed=len(report.probe_changed),
        train_docs=len(train_docs), eval_docs=len(eval_docs), eval_chars=sum(len(c) for c in chunks),
        tokens_per_step=tokens_per_step,
        a_chars_per_step=tokens_per_step * sum(map(len, train_docs)) / len(base_stream),
        b_chars_per_step=tokens_per_step * sum(map(len, train_docs)) / len(merged_stream),
    )
    return results


def print_results(r: dict, args: argparse.Namespace) -> None:
    print(f"vocabulary: {r['base_vocab_size']} -> {r['merged_vocab_size']} pieces (+{r['added_pieces']}), "
          f"probe lines changed: {r['probe_lines_changed']}")
    before, after = r["zh_tokens_per_char_before"], r["zh_tokens_per_char_after"]
    print(f"held-out Chinese tokens per character: {before:.3f} -> {after:.3f} (ratio {after / before:.2f})")
    print(f"base model after {args.pretrain_steps} steps: {r['base_model_bpc']:.3f} bits/char")
    print(f"continued {args.continue_steps} steps x {r['tokens_per_step']} tokens:")
    print(f"  A base vocabulary:     {r['a_bpc']:.3f} bits/char  ({r['a_chars_per_step']:.0f} chars/step, "
          f"{r['a_seconds']:.0f} s)")
    print(f"  B extended vocabulary: {r['b_bpc']:.3f} bits/char  ({r['b_chars_per_step']:.0f} chars/step, "
          f"{r['b_seconds']:.0f} s; {r['b_bpc_at_start']:.3f} right after resizing)")
    print(f"  ratio B/A: {r['b_bpc'] / r['a_bpc']:.3f}")
    if "c_bpc" in r:
        print(f"  C extended vocabulary, {r['c_steps']} steps (the characters A saw): {r['c_bpc']:.3f} bits/char, "
              f"ratio C/A {r['c_bpc'] / r['a_bpc']:.3f}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if not os.path.isfile(args.zh_corpus_path):
        raise SystemExit(f"{args.zh_corpus_path}: Chinese corpus not found; pass --zh_corpus_path")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or tmp
        os.makedirs(work, exist_ok=True)
        results = run(args, work)
    print_results(results, args)
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    cli.run(main)
