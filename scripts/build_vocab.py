"""Train a SentencePiece model on a corpus (step 1 of a Chinese vocabulary extension; see docs/vocabulary.md).

    python scripts/build_vocab.py --corpus_path data/zh_corpus.txt --output_model_path zh_sp.model --vocab_size 20000
"""

from __future__ import annotations

import argparse
import dataclasses

from tencentpretrain.cli import run
from tencentpretrain.vocab.build import MODEL_TYPES, VocabBuildConfig, build_vocab


def build_parser() -> argparse.ArgumentParser:
    d = VocabBuildConfig(corpus_paths=("-",), output_model_path="-")  # defaults
    flag = argparse.BooleanOptionalAction
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus_path", nargs="+", required=True, help="text files, one document per line")
    p.add_argument("--output_model_path", required=True, help="the .model file to write (a .vocab listing beside it)")
    p.add_argument("--vocab_size", type=int, default=d.vocab_size, help="number of pieces")
    p.add_argument("--model_type", choices=MODEL_TYPES, default=d.model_type, help="bpe matches LLaMA's tokenizer")
    p.add_argument("--character_coverage", type=float, default=d.character_coverage,
                   help="share of characters that get their own piece")
    p.add_argument("--byte_fallback", action=flag, default=d.byte_fallback, help="unknown characters become bytes")
    p.add_argument("--split_digits", action=flag, default=d.split_digits, help="one piece per digit")
    p.add_argument("--user_defined_symbols", nargs="*", default=[], help="pieces kept whole wherever they occur")
    p.add_argument("--control_symbols", nargs="*", default=[], help="reserved pieces never produced from text")
    p.add_argument("--normalization_rule_name", default=d.normalization_rule_name,
                   help="identity (LLaMA), nfkc, nmt_nfkc, ...; must match the base model to merge")
    p.add_argument("--max_sentence_length", type=int, default=d.max_sentence_length,
                   help="bytes; longer lines are cut at sentence ends")
    p.add_argument("--max_sentencepiece_length", type=int, default=d.max_sentencepiece_length,
                   help="most characters in one piece")
    p.add_argument("--hard_vocab_limit", action=flag, default=d.hard_vocab_limit,
                   help="--no-hard_vocab_limit: a small corpus gives fewer pieces instead of an error")
    p.add_argument("--input_sentence_size", type=int, default=0, help="train on a seeded sample of N lines; 0 = all")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of that sample")
    p.add_argument("--num_threads", type=int, default=d.num_threads, help="trainer threads (1 = reproducible)")
    p.add_argument("--json_format_corpus", action="store_true", help='corpus lines are JSON with a "text" field')
    return p


def main(argv: list[str] | None = None) -> None:
    args = vars(build_parser().parse_args(argv))
    args["corpus_paths"] = tuple(args.pop("corpus_path"))
    args["json_format"] = args.pop("json_format_corpus")
    for key in ("user_defined_symbols", "control_symbols"):
        args[key] = tuple(args[key])
    fields = {f.name for f in dataclasses.fields(VocabBuildConfig)}
    result = build_vocab(VocabBuildConfig(**{k: v for k, v in args.items() if k in fields}))
    print(f"{result.model_path}: {result.pieces} pieces, sha256 {result.sha256}")


if __name__ == "__main__":
    run(main)
