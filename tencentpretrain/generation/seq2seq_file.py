"""File-to-file encoder-decoder generation: what ``scripts/generate_seq2seq.py`` runs.

Each non-empty line of ``--test_path`` (stripped) is a source: ``[CLS] line [SEP]`` cut to ``--seq_length``, as
the ``bart``/``mt`` processors built it. The decoder starts from the target vocabulary's ``[CLS]``/``<s>`` and
generates up to ``--tgt_seq_length - 1`` tokens (the original's count), stopping early at ``[SEP]``/``</s>``.
The output holds, per source, the line, a newline and the target pieces joined without spaces, start token
included (the original's format); entries are separated by a blank line, so one line gives exactly the original's
file. Decoding is top-k / top-p sampling with the original's defaults (top_k 70, top_p 0 = off, temperature 1),
greedy with ``--temperature 0``, and beam search with ``--beam_width N`` (new; transformers' algorithm).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tencentpretrain.atomic import atomic_path
from tencentpretrain.config import ModelConfig, add_model_args, model_config_from_args, parse_args_with_config
from tencentpretrain.convert.loading import is_hf_directory, load_model
from tencentpretrain.errors import ConfigError, TokenizerError
from tencentpretrain.generation.batch_file import read_prompts
from tencentpretrain.generation.seq2seq import BeamOptions, beam_search_seq2seq, generate_seq2seq
from tencentpretrain.models.model import Model
from tencentpretrain.registry import TOKENIZERS
from tencentpretrain.tokenizers.base import (
    Tokenizer,
    TokenizerConfig,
    add_tokenizer_args,
    build_tokenizer,
    tokenizer_config_from_args,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Seq2seqDecoding:
    """How each source is decoded."""

    seq_length: int = 128  # source tokens at most ([CLS] and [SEP] included)
    tgt_seq_length: int = 128  # decoder length: start token + up to tgt_seq_length - 1 generated tokens
    beam_width: int = 1  # > 1: beam search (deterministic); 1: sampling, greedy with temperature 0
    length_penalty: float = 1.0  # beam search: score = sum log p / length ** length_penalty
    temperature: float = 1.0
    top_k: int = 70
    top_p: float = 0.0  # 0 or 1 = off
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.seq_length < 2 or self.tgt_seq_length < 2:
            raise ConfigError(f"--seq_length ({self.seq_length}) and --tgt_seq_length ({self.tgt_seq_length}) must "
                              "be at least 2 (a start token and one generated token)")
        BeamOptions(width=self.beam_width)  # validates the width
        if self.top_k < 0 or not 0 <= self.top_p <= 1 or self.temperature < 0:
            raise ConfigError(f"need top_k >= 0, 0 <= top_p <= 1, temperature >= 0; got {self.top_k}, "
                              f"{self.top_p}, {self.temperature}")


def special_ids(tokenizer: Tokenizer, side: str) -> tuple[int, int]:
    """(start, end) ids of ``tokenizer``: its [CLS]/<s> and [SEP]/</s>."""
    if tokenizer.bos_id is None or tokenizer.eos_id is None:
        raise TokenizerError(f"the {side} tokenizer {tokenizer.name!r} has no [CLS]/<s> or [SEP]/</s>: seq2seq "
                             "generation needs both (use the vocabulary the model was trained with)")
    return tokenizer.bos_id, tokenizer.eos_id


def generate_targets(
    model: Model, tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, lines: Sequence[str], decoding: Seq2seqDecoding
) -> list[list[int]]:
    """Decoder ids per line: the start id, then the generated ids (the end id included when it was reached)."""
    cls_id, sep_id = special_ids(tokenizer, "source")
    start_id, end_id = special_ids(tgt_tokenizer, "target")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(decoding.seed if decoding.seed is not None else torch.seed())
    max_new = decoding.tgt_seq_length - 1
    targets = []
    for line in lines:
        src = torch.tensor([[cls_id, *tokenizer.encode(line), sep_id][: decoding.seq_length]], device=device)
        if decoding.beam_width > 1:
            options = BeamOptions(width=decoding.beam_width, length_penalty=decoding.length_penalty)
            ids = beam_search_seq2seq(model, src, start_id=start_id, eos_id=end_id, max_new_tokens=max_new,
                                      options=options)
        else:
            row = generate_seq2seq(model, src, start_id=start_id, eos_id=end_id, max_new_tokens=max_new,
                                   temperature=decoding.temperature, top_k=decoding.top_k, top_p=decoding.top_p,
                                   generator=generator)[0].tolist()
            ids = row[: row.index(end_id) + 1] if end_id in row else row
        targets.append([start_id, *ids])
    return targets


def write_seq2seq_predictions(path: str, lines: Sequence[str], targets: Sequence[str]) -> None:
    """The line, "\\n", its target; entries separated by a blank line (written atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\n\n".join(line + "\n" + target for line, target in zip(lines, targets)))


def add_seq2seq_args(parser: argparse.ArgumentParser) -> None:
    """The original generate_seq2seq.py's flags (infer_opts, tokenizer_opts, sampling, target side) + beam search."""
    parser.add_argument("--load_model_path", required=True, help="TencentPretrain .bin/.safetensors or HF directory")
    parser.add_argument("--config_path", help="model config JSON (not needed for an HF directory)")
    parser.add_argument("--test_path", required=True, help="sources, one per line")
    parser.add_argument("--prediction_path", required=True, help="output file")
    parser.add_argument("--batch_size", type=int, default=64, help="accepted for compatibility: sources are "
                        "decoded one at a time, as in the original")
    parser.add_argument("--seq_length", type=int, default=128, help="source tokens at most")
    parser.add_argument("--tgt_seq_length", type=int, default=128, help="target length (start token included)")
    parser.add_argument("--top_k", type=int, default=70, help="sample from the k most likely tokens (0 = off)")
    parser.add_argument("--top_p", type=float, default=0.0, help="nucleus sampling mass (0 = off)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--beam_width", type=int, default=1, help="beam search with this many beams (1 = off)")
    parser.add_argument("--length_penalty", type=float, default=1.0, help="beam search: exponent of the length "
                        "that divides a hypothesis' log-probability")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1")
    add_tokenizer_args(parser)
    parser.add_argument("--tgt_tokenizer", choices=TOKENIZERS.names(), default=None,
                        help="target-side tokenizer (default: the source's, or --tokenizer with --tgt_vocab_path)")
    parser.add_argument("--tgt_vocab_path", help="target-side vocabulary (a model trained on mt data with its own "
                        "target vocabulary)")
    add_model_args(parser)


def target_tokenizer(args: argparse.Namespace, tokenizer: Tokenizer) -> Tokenizer:
    """The target side's tokenizer: the source's unless --tgt_tokenizer / --tgt_vocab_path name another."""
    if args.tgt_tokenizer is None and args.tgt_vocab_path is None:
        return tokenizer
    if args.tgt_vocab_path is None:
        raise ConfigError("--tgt_tokenizer needs --tgt_vocab_path (the target vocabulary the model was trained with)")
    return build_tokenizer(TokenizerConfig(tokenizer=args.tgt_tokenizer or args.tokenizer,
                                           vocab_path=args.tgt_vocab_path, do_lower_case=args.do_lower_case == "true"))


def load_seq2seq_model(args: argparse.Namespace, tokenizer: Tokenizer, tgt_tokenizer: Tokenizer) -> Model:
    """The encoder-decoder of the flags, loaded strictly, in eval mode on --device."""
    config: ModelConfig | None = None
    if not is_hf_directory(args.load_model_path):
        if not args.config_path:
            raise ConfigError("--config_path is required unless --load_model_path is an HF model directory")
        config = model_config_from_args(args)
        if config.decoder is None:
            raise ConfigError(f"{args.config_path}: the model has no decoder; generate_seq2seq.py is for "
                              "encoder-decoder models (use scripts/generate_lm.py for a language model)")
    separate = tgt_tokenizer is not tokenizer
    model = load_model(config, args.load_model_path,
                       vocab_size=None if config and config.vocab_size else tokenizer.vocab_size,
                       tgt_vocab_size=tgt_tokenizer.vocab_size if separate else None)
    return model.to(args.device).eval()


def run_seq2seq_file(argv: list[str] | None, *, description: str) -> None:
    """The ``main`` of scripts/generate_seq2seq.py: flags, tokenizers, model, sources, output file."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_seq2seq_args(parser)
    args, _ = parse_args_with_config(parser, argv)
    decoding = Seq2seqDecoding(
        seq_length=args.seq_length, tgt_seq_length=args.tgt_seq_length, beam_width=args.beam_width,
        length_penalty=args.length_penalty, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        seed=args.seed)
    tokenizer = build_tokenizer(tokenizer_config_from_args(args))
    tgt_tokenizer = target_tokenizer(args, tokenizer)
    lines = read_prompts(args.test_path, keep_newline=False)
    model = load_seq2seq_model(args, tokenizer, tgt_tokenizer)
    targets = generate_targets(model, tokenizer, tgt_tokenizer, lines, decoding)
    pieces = ["".join(tgt_tokenizer.id_to_piece(i) for i in ids) for ids in targets]
    write_seq2seq_predictions(args.prediction_path, lines, pieces)
    logger.info("wrote %d targets to %s", len(targets), args.prediction_path)
