"""Regenerate the tiny SentencePiece model used by the tests (``tests/assets/tiny_spm.model``).

The model imitates LLaMA's tokenizer layout on a few hundred pieces: BPE, ``<unk>``=0, ``<s>``=1, ``</s>``=2, no
pad piece, byte fallback (``<0x00>``..``<0xFF>`` at ids 3..258), identity normalisation, split digits. It is
trained on ``tiny_spm_corpus.txt`` (Chinese and English text written for this project) with one thread and no
sampling, so running this script again gives the same file.

    python tests/assets/make_tiny_spm.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sentencepiece as spm

ASSETS = Path(__file__).resolve().parent


def train_tiny_spm(corpus: Path, prefix: Path, vocab_size: int = 700, *, with_pad: bool = False) -> Path:
    """Train a LLaMA-like BPE model on ``corpus`` and return the path of the ``.model`` file."""
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=0.98,  # rare characters fall back to bytes, which the tests exercise
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3 if with_pad else -1,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    Path(f"{prefix}.vocab").unlink(missing_ok=True)
    return Path(f"{prefix}.model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab_size", type=int, default=700, help="number of pieces")
    args = parser.parse_args()
    path = train_tiny_spm(ASSETS / "tiny_spm_corpus.txt", ASSETS / "tiny_spm", args.vocab_size)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
