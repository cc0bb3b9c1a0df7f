"""Merge a Chinese SentencePiece model into a LLaMA-style base model (step 2; see docs/vocabulary.md).

Base pieces keep their ids and scores; new pieces are appended. The report gives the pieces added, Chinese
tokens per character before and after, and the English/code probe lines that tokenize differently.

    python scripts/merge_tokenizers.py --base_spm_model_path llama/tokenizer.model --extra_spm_model_path zh_sp.model \\
        --output_model_path merged_tokenizer.model --zh_eval_path data/zh_corpus.txt --report_path merge_report.json
"""

from __future__ import annotations

import argparse
import json

from tencentpretrain.cli import run
from tencentpretrain.vocab.build import read_corpus_lines
from tencentpretrain.vocab.merge import DEFAULT_PROBE, MergeConfig, merge_tokenizers


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base_spm_model_path", required=True, help="the base tokenizer (LLaMA's tokenizer.model)")
    p.add_argument("--extra_spm_model_path", required=True, help="the model whose pieces are added (Chinese)")
    p.add_argument("--output_model_path", required=True, help="the merged .model to write")
    p.add_argument("--zh_eval_path", help="Chinese text for tokens-per-character before and after")
    p.add_argument("--probe_path", help="English/code lines that should tokenize as before (default: built in)")
    p.add_argument("--report_path", help="write the report as JSON here")
    p.add_argument("--allow_ascii_alnum", action="store_true", help="also add pieces with ASCII letters/digits")
    p.add_argument("--allow_ascii_symbols", action="store_true", help="also add ASCII punctuation-only pieces")
    p.add_argument("--include_user_defined", action="store_true", help="also add the extra model's user pieces")
    p.add_argument("--score_mode", choices=("auto", "after_base", "keep"), default="auto",
                   help="scores of new pieces: below all base scores (BPE) or the extra model's own")
    p.add_argument("--max_new_pieces", type=int, help="add at most this many pieces")
    p.add_argument("--fail_on_probe_change", action="store_true", help="exit 1 if any probe line changes")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = MergeConfig(allow_ascii_alnum=args.allow_ascii_alnum, allow_ascii_symbols=args.allow_ascii_symbols,
                         include_user_defined=args.include_user_defined, score_mode=args.score_mode,
                         max_new_pieces=args.max_new_pieces)
    zh = [text for *_, text in read_corpus_lines([args.zh_eval_path])] if args.zh_eval_path else []
    probe = [text for *_, text in read_corpus_lines([args.probe_path])] if args.probe_path else DEFAULT_PROBE
    report = merge_tokenizers(args.base_spm_model_path, args.extra_spm_model_path, args.output_model_path, config,
                              zh_eval_lines=zh, probe_lines=probe)
    if args.report_path:
        with open(args.report_path, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2, ensure_ascii=False)
    print("\n".join(report.summary()))
    if args.fail_on_probe_change and report.probe_changed:
        raise SystemExit(1)


if __name__ == "__main__":
    run(main)
