"""The demo behind ``bash demo.sh``: the whole Chinese pipeline on CPU with the project's own data.

Each stage runs one of the project's real command-line tools, printing the command first, so the demo is
also a transcript of how to do each step by hand:

    tokenizer -> lm dataset -> pretraining (+ loss curve) -> alpaca and chat datasets -> LoRA instruction
    tuning -> merge -> answers to Chinese prompts -> HF and GGUF export -> perplexity

A stage whose outputs exist and were made by the same command is skipped, so re-running reuses what is built;
a stage after one that ran is rebuilt, and ``--force`` rebuilds everything. Everything
goes under ``--output_dir`` (default ``runs/demo``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from tencentpretrain.cli import run

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("tencentpretrain.demo")

HELDOUT_LINES = 60  # the corpus's last lines, kept out of pretraining to measure perplexity
TEMPLATE = "user_bot"  # the prompt format of instruction tuning and of the answers
LORA_RANK, LORA_ALPHA = 32, 32  # adapters on every linear layer of the attention and feed-forward blocks


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo run; the defaults finish in minutes on 2 CPU cores."""

    output_dir: str
    vocab_size: int = 3000
    seq_length: int = 128  # pretraining and conversations
    instruction_seq_length: int = 64  # instructions are short (about 30 tokens): less padding
    pretrain_steps: int = 800
    pretrain_batch_size: int = 16
    sft_steps: int = 300
    chat_steps: int = 100
    sft_batch_size: int = 32
    force: bool = False

    def path(self, *names: str) -> str:
        return os.path.join(self.output_dir, *names)


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: a command and the files it produces."""

    title: str
    outputs: tuple[str, ...]
    command: tuple[str, ...]


def _python(script: str, *args: object) -> tuple[str, ...]:
    return (sys.executable, os.path.join(REPO_ROOT, script), *(str(a) for a in args))


def _stages(c: DemoConfig) -> list[Stage]:
    data = lambda name: os.path.join(REPO_ROOT, "data", name)  # noqa: E731
    config = os.path.join(REPO_ROOT, "models", "llama", "demo_config.json")
    spm = c.path("tokenizer.model")
    common_model = ("--config_path", config, "--spm_model_path", spm)
    lora = ("--use_lora", "--lora_r", LORA_RANK, "--lora_alpha", LORA_ALPHA, "--lora_target_modules",
            "linear_layers.0", "linear_layers.1", "linear_layers.2", "final_linear", "linear_gate", "linear_1",
            "linear_2")
    sft_common = (*common_model, "--pretrained_model_path", c.path("pretrained.bin"), "--learning_rate", 6e-3, "--warmup", 0.05, "--scheduler", "cosine",
                  "--report_steps", 25, "--save_checkpoint_steps", 100000, *lora)
    return [
        Stage("train a Chinese sentencepiece tokenizer", (spm,), _python(
            "scripts/build_vocab.py", "--corpus_path", c.path("train.txt"), "--output_model_path", spm,
            "--vocab_size", c.vocab_size, "--model_type", "bpe", "--character_coverage", 0.9995,
            "--normalization_rule_name", "identity")),
        Stage("preprocess the corpus (lm)", (c.path("corpus.pt"),), _python(
            "preprocess.py", "--corpus_path", c.path("train.txt"), "--spm_model_path", spm, "--dataset_path",
            c.path("corpus.pt"), "--data_processor", "lm", "--seq_length", c.seq_length, "--full_sentences",
            "--processes_num", 2)),
        Stage("pretrain a tiny LLaMA", (c.path("pretrained.bin"), c.path("pretrain.log")), _python(
            "pretrain.py", *common_model, "--dataset_path", c.path("corpus.pt"), "--output_model_path",
            c.path("pretrained.bin"), "--total_steps", c.pretrain_steps, "--batch_size", c.pretrain_batch_size,
            "--learning_rate", 3e-3, "--warmup", 0.05, "--scheduler", "cosine", "--report_steps", 25,
            "--save_checkpoint_steps", 100000, "--log_path", c.path("pretrain.log"))),
        Stage("plot the pretraining loss", (c.path("pretrain_loss.png"),), _python(
            "scripts/plot_loss.py", "--log_path", c.path("pretrain.log"), "--output_path",
            c.path("pretrain_loss.png"), "--title", "demo pretraining loss")),
        Stage("preprocess the instructions (alpaca)", (c.path("instructions.pt"),), _python(
            "preprocess.py", "--corpus_path", data("instructions.jsonl"), "--spm_model_path", spm,
            "--dataset_path", c.path("instructions.pt"), "--data_processor", "alpaca", "--prompt_template",
            TEMPLATE, "--seq_length", c.instruction_seq_length)),
        Stage("preprocess the conversations (chat)", (c.path("conversations.pt"),), _python(
            "preprocess.py", "--corpus_path", data("conversations.jsonl"), "--spm_model_path", spm,
            "--dataset_path", c.path("conversations.pt"), "--data_processor", "chat", "--prompt_template",
            TEMPLATE, "--seq_length", c.seq_length)),
        Stage("instruction-tune with LoRA (alpaca)", (c.path("lora_sft.bin"), c.path("sft.log")), _python(
            "pretrain.py", *sft_common, "--dataset_path", c.path("instructions.pt"), "--data_processor",
            "alpaca", "--total_steps", c.sft_steps, "--batch_size", c.sft_batch_size, "--output_model_path",
            c.path("lora_sft.bin"), "--log_path", c.path("sft.log"))),
        Stage("continue the LoRA on conversations (chat)", (c.path("lora_chat.bin"), c.path("chat.log")), _python(
            "pretrain.py", *sft_common, "--dataset_path", c.path("conversations.pt"), "--data_processor", "chat",
            "--lora_pretrained_model_path", c.path("lora_sft.bin"), "--total_steps", c.chat_steps, "--batch_size",
            c.sft_batch_size // 2, "--output_model_path", c.path("lora_chat.bin"), "--log_path", c.path("chat.log"))),
        Stage("merge the LoRA weights", (c.path("chat.bin"),), _python(
            "scripts/merge_lora.py", "--input_model_path", c.path("pretrained.bin"), "--lora_model_path",
            c.path("lora_chat.bin"), "--lora_alpha", LORA_ALPHA, "--config_path", config, "--output_model_path",
            c.path("chat.bin"))),
        Stage("answer Chinese prompts", (c.path("answers.txt"),), _python(
            "inference/llama_infer.py", "--load_model_path", c.path("chat.bin"), *common_model, "--test_path",
            c.path("prompts.txt"), "--prediction_path", c.path("answers.txt"), "--prompt_template", TEMPLATE,
            "--temperature", 0, "--repetition_penalty", 1.0, "--max_new_tokens", 48, "--batch_size", 8)),
        Stage("export to HuggingFace", (c.path("hf"),), _python(
            "scripts/convert_llama_from_tencentpretrain_to_huggingface.py", "--input_model_path",
            c.path("chat.bin"), *common_model, "--output_model_path", c.path("hf"), "--prompt_template", TEMPLATE)),
        Stage("export to GGUF for llama.cpp (q8_0)", (c.path("chat-q8_0.gguf"),), _python(
            "scripts/convert_tencentpretrain_to_gguf.py", "--input_model_path", c.path("chat.bin"), *common_model,
            "--output_model_path", c.path("chat-q8_0.gguf"), "--outtype", "q8_0", "--prompt_template", TEMPLATE)),
        Stage("evaluate perplexity on held-out text", (c.path("perplexity.json"),), _python(
            "scripts/evaluate_ppl.py", "--load_model_path", c.path("pretrained.bin"), *common_model,
            "--corpus_path", c.path("heldout.txt"), "--seq_length", c.seq_length, "--output_path",
            c.path("perplexity.json"))),
    ]


def _prepare_inputs(c: DemoConfig) -> bool:
    """Split the corpus into pretraining and held-out lines; write the demo prompts one per line.

    Returns whether any of these files changed (then every stage is rebuilt).
    """
    os.makedirs(c.output_dir, exist_ok=True)
    with open(os.path.join(REPO_ROOT, "data", "zh_corpus.txt"), encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    prompts = [_prompt_text(row) for row in _demo_prompts()]
    changed = [
        _write_if_changed(c.path("train.txt"), "\n".join(lines[:-HELDOUT_LINES]) + "\n"),
        _write_if_changed(c.path("heldout.txt"), "\n".join(lines[-HELDOUT_LINES:]) + "\n"),
        _write_if_changed(c.path("prompts.txt"), "\n".join(prompts) + "\n"),
    ]
    return any(changed)


def _demo_prompts() -> list[dict]:
    with open(os.path.join(REPO_ROOT, "data", "demo_prompts.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _prompt_text(row: dict) -> str:
    return row["instruction"] + (("\n" + row["input"]) if row.get("input") else "")


def _write_if_changed(path: str, text: str) -> bool:
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def _run(stage: Stage, index: int, total: int, *, rebuild: bool, output_dir: str) -> bool:
    """Run ``stage`` unless its outputs exist and were made by the same command; returns whether it ran.

    ``rebuild`` forces the run (``--force``, or an earlier stage ran, so this one's inputs changed).
    """
    header = f"[{index}/{total}] {stage.title}"
    stamp = os.path.join(output_dir, ".stamps", f"{index:02d}.json")
    if not rebuild and all(os.path.exists(p) for p in stage.outputs) and _read_stamp(stamp) == list(stage.command):
        logger.info("%s: already built, reusing %s", header, ", ".join(_rel(p) for p in stage.outputs))
        return False
    for path in stage.outputs:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    logger.info("%s\n  $ %s", header, " ".join(_quote(_rel(a)) for a in stage.command))
    result = subprocess.run(stage.command, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise SystemExit(f"demo stopped: '{stage.title}' failed with exit status {result.returncode}")
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    with open(stamp, "w", encoding="utf-8") as f:
        json.dump(list(stage.command), f)
    return True


def _read_stamp(path: str) -> list[str] | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _rel(path: str) -> str:
    if path == sys.executable:
        return "python"
    return os.path.relpath(path, REPO_ROOT) if os.path.isabs(path) and path.startswith(REPO_ROOT) else path


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(ch in arg for ch in " \"'") else arg


def _summary(c: DemoConfig, seconds: float) -> str:
    lines = [f"demo finished in {seconds / 60:.1f} min; everything is in {_rel(c.output_dir)}/", ""]
    lines += _loss_lines(c)
    with open(c.path("perplexity.json"), encoding="utf-8") as f:
        ppl = json.load(f)
    lines.append(f"held-out perplexity of the pretrained model: {ppl['perplexity']:.1f} "
                 f"({ppl['bits_per_character']:.2f} bits per character)")
    lines += ["", "answers of the instruction-tuned model (greedy):", _read(c.path("answers.txt")).rstrip(), ""]
    outputs = [
        ("tokenizer", "tokenizer.model"), ("pretrained model", "pretrained.bin"),
        ("loss curve", "pretrain_loss.png"), ("LoRA weights", "lora_chat.bin"), ("merged chat model", "chat.bin"),
        ("HuggingFace export", "hf"), ("GGUF export", "chat-q8_0.gguf"), ("logs", "pretrain.log, sft.log, chat.log"),
    ]
    lines += [f"{name:>20}: {_rel(c.output_dir)}/{path}" for name, path in outputs]
    lines += ["", "chat with it (in the demo's environment: source .venv/bin/activate):",
              f"  python inference/llama_dialogue.py --load_model_path {_rel(c.path('chat.bin'))} "
              f"--config_path models/llama/demo_config.json --spm_model_path {_rel(c.path('tokenizer.model'))}"]
    return "\n".join(lines)


def _loss_lines(c: DemoConfig) -> list[str]:
    import math

    from tencentpretrain.training.logs import read_loss_curve

    train = read_loss_curve(c.path("pretrain.log")).train
    (first_step, first), (last_step, last) = train[0], train[-1]
    return [f"pretraining loss: {first:.2f} at step {first_step} -> {last:.2f} at step {last_step} "
            f"(ln(vocab) = {math.log(c.vocab_size):.2f})"]


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the whole pipeline on the project's own Chinese data.")
    parser.add_argument("--output_dir", default=os.path.join(REPO_ROOT, "runs", "demo"))
    parser.add_argument("--pretrain_steps", type=int, default=DemoConfig.pretrain_steps)
    parser.add_argument("--sft_steps", type=int, default=DemoConfig.sft_steps)
    parser.add_argument("--chat_steps", type=int, default=DemoConfig.chat_steps)
    parser.add_argument("--force", action="store_true", help="rebuild every stage")
    args = parser.parse_args(argv)
    config = DemoConfig(output_dir=os.path.abspath(args.output_dir), pretrain_steps=args.pretrain_steps,
                        sft_steps=args.sft_steps, chat_steps=args.chat_steps, force=args.force)
    inputs_changed = _prepare_inputs(config)
    stages = _stages(config)
    start = time.perf_counter()
    rebuild = config.force or inputs_changed
    for i, stage in enumerate(stages, 1):
        rebuild = _run(stage, i, len(stages), rebuild=rebuild, output_dir=config.output_dir) or rebuild
    print(_summary(config, time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    run(main, log_format="[%(asctime)s demo] %(message)s")
