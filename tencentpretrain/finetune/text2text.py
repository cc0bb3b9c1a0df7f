"""Text-to-text fine-tuning (T5/BART-style): ``finetune/run_text2text.py`` and ``inference/run_text2text_infer.py``.

Data: a TSV with the header ``text_a<TAB>label`` (or ``text_a<TAB>text_b<TAB>label``); ``label`` is the target
text. As in the original, the source is ``[CLS] text_a [SEP]`` (a pair is tokenized as the one string
``text_a + "[SEP]" + text_b``), cut to ``--seq_length``; the decoder reads ``[CLS] label [SEP]`` cut to
``--tgt_seq_length`` and learns the next token at every position, including ``[PAD]`` after the final
``[SEP]``.

The model is the pretraining encoder-decoder with an ``lm`` target: state keys ``embedding.*``, ``encoder.*``,
``tgt_embedding.*``, ``decoder.*``, ``target.lm.output_layer.*``, those of the original's ``Text2text``.

Evaluation decodes greedily from ``[CLS]`` for up to ``--tgt_seq_length`` tokens and compares the pieces before
the first ``[SEP]``, joined, with the label's first ``tgt_seq_length - 2`` pieces (the original's exact match,
truncation included): ``Acc. (Correct/Total): ...``. Predictions: a TSV with the column ``label``, one generated
text per line.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from tencentpretrain.atomic import atomic_path
from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.finetune.data import SEP_TOKEN, Example, SpecialIds, batches, pad_batch, read_tsv, require_examples
from tencentpretrain.finetune.loop import fit_on_files, log_file, seed_run, to_device
from tencentpretrain.finetune.model import TaskOutput, build_task_model, load_finetuned_weights
from tencentpretrain.finetune.options import (
    FinetuneOptions,
    InferOptions,
    ParsedRun,
    finetune_parser,
    infer_parser,
    parse_run,
)
from tencentpretrain.generation.seq2seq import generate_seq2seq
from tencentpretrain.models.model import Model
from tencentpretrain.tokenizers import Tokenizer

logger = logging.getLogger("tencentpretrain.finetune")

DEFAULT_TGT_SEQ_LENGTH = 32


class Text2text(Model):
    """Encoder-decoder with the ``lm`` target (whatever targets the config names, as the original's
    ``Text2text``). ``forward(batch)`` takes ``src``, ``seg`` (B, S), ``tgt_in``, ``tgt_seg`` (B, T) and
    optionally ``tgt_out`` (B, T); the logits are (B, T, V)."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        if config.decoder is None:
            raise ConfigError("run_text2text needs an encoder-decoder config (a 'decoder', e.g. "
                              "models/t5/small_config.json); this --config_path has none")
        super().__init__(config.replace(target=("lm",)), vocab_size)

    def forward(self, batch: dict[str, torch.Tensor]) -> TaskOutput:  # type: ignore[override]
        memory = self.hidden_states(batch["src"], batch["seg"])  # (B, S, H), padding masked
        hidden = self.decode(memory, batch["seg"], batch["tgt_in"], batch["tgt_seg"])  # (B, T, H)
        logits = self.target.logits(hidden)  # (B, T, V)
        if "tgt_out" not in batch:
            return TaskOutput(None, logits)
        scored = batch["tgt_seg"] > 0
        loss = F.cross_entropy(logits[scored].float(), batch["tgt_out"][scored],
                               label_smoothing=self.target.lm.label_smoothing)
        return TaskOutput(loss, logits)


# ---------------------------------------------------------------------- data
def source_ids(tokenizer: Tokenizer, specials: SpecialIds, text_a: str, text_b: str | None,
               seq_length: int) -> list[int]:
    """``[CLS] text [SEP]`` cut to ``seq_length``; a pair is the one text ``text_a[SEP]text_b``, tokenized as the
    original did (a BERT tokenizer splits the literal "[SEP]" like any other text)."""
    text = text_a if text_b is None else text_a + SEP_TOKEN + text_b
    return [specials.cls, *tokenizer.encode(text), specials.sep][:seq_length]


def read_text2text(path: str, tokenizer: Tokenizer, seq_length: int, tgt_seq_length: int, *,
                   with_targets: bool = True) -> list[Example]:
    """Examples of a text-to-text TSV: ``src``, ``seg`` and, with targets, ``tgt_in`` (``[CLS] label [SEP]``
    cut to ``tgt_seq_length``), ``tgt_out`` (``tgt_in`` shifted left, ``[PAD]`` last), ``tgt_seg`` and ``gold``
    (the label's pieces the original's exact match compares with)."""
    if tgt_seq_length < 3:
        raise ConfigError(f"--tgt_seq_length must be >= 3 ([CLS], a token, [SEP]), got {tgt_seq_length}")
    specials = SpecialIds.of(tokenizer)
    rows = read_tsv(path, ("text_a", "label") if with_targets else ("text_a",))
    examples = []
    for row in rows:
        src = source_ids(tokenizer, specials, row.get("text_a"), row.fields.get("text_b"), seq_length)
        example: Example = {"src": src, "seg": [1] * len(src)}
        if with_targets:
            label_ids = tokenizer.encode(row.get("label"))
            tgt_in = [specials.cls, *label_ids, specials.sep][:tgt_seq_length]
            example.update(tgt_in=tgt_in, tgt_out=tgt_in[1:] + [specials.pad], tgt_seg=[1] * len(tgt_in),
                           gold=pieces_text(tokenizer, label_ids[:tgt_seq_length - 2]))
        examples.append(example)
    return examples


def pieces_text(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """The pieces of ``ids`` joined without separator (how the original wrote and compared generated text)."""
    return "".join(tokenizer.id_to_piece(i) for i in ids)


def collate_for(tokenizer: Tokenizer):
    pad_id = SpecialIds.of(tokenizer).pad
    return lambda examples: pad_batch(examples, {"src": pad_id, "tgt_in": pad_id, "tgt_out": pad_id})


# ---------------------------------------------------------------------- generation and evaluation
def generate_texts(model: Text2text, examples: Sequence[Example], tokenizer: Tokenizer, *, batch_size: int,
                   tgt_seq_length: int) -> Iterator[str]:
    """Greedy decoding from ``[CLS]`` of each example, in order: the pieces before the first ``[SEP]``."""
    specials = SpecialIds.of(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    for chunk in batches(examples, batch_size):
        batch = to_device(pad_batch([{"src": e["src"], "seg": e["seg"]} for e in chunk], {"src": specials.pad}),
                          device)
        generated = generate_seq2seq(model, batch["src"], seg=batch["seg"], start_id=specials.cls,
                                     eos_id=specials.sep, max_new_tokens=tgt_seq_length)  # (B, <= L)
        for row in generated.tolist():
            yield pieces_text(tokenizer, row[:row.index(specials.sep)] if specials.sep in row else row)


def evaluate_text2text(model: Text2text, examples: Sequence[Example], tokenizer: Tokenizer, *, batch_size: int,
                       tgt_seq_length: int) -> float:
    """Exact-match accuracy of greedy generation against the labels, logged as the original's ``Acc.`` line."""
    generated = generate_texts(model, examples, tokenizer, batch_size=batch_size, tgt_seq_length=tgt_seq_length)
    correct = sum(text == example["gold"] for text, example in zip(generated, examples))
    total = len(examples)
    accuracy = correct / total if total else 0.0
    logger.info("Acc. (Correct/Total): %.4f (%d/%d) ", accuracy, correct, total)
    return accuracy


# ---------------------------------------------------------------------- scripts
def add_text2text_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("text-to-text")
    group.add_argument("--tgt_seq_length", type=int, default=DEFAULT_TGT_SEQ_LENGTH,
                       help="longest target in tokens, [CLS] and [SEP] included; also the most tokens generated")


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """``finetune/run_text2text.py``."""
    finetune_text2text(parse_run(finetune_parser(__doc__, add_text2text_flags, adversarial=False), argv))


def finetune_text2text(run: ParsedRun) -> None:
    options: FinetuneOptions = run.options(FinetuneOptions)
    tgt_seq_length = run.args.tgt_seq_length
    with log_file(options.log_path):
        seed_run(options)
        model = build_task_model(Text2text, run.model_config, run.tokenizer.vocab_size,
                                 options.pretrained_model_path)

        def read(path: str) -> list[Example]:
            return read_text2text(path, run.tokenizer, options.seq_length, tgt_seq_length)

        def evaluate(m: Text2text, examples: Sequence[Example]) -> float:
            return evaluate_text2text(m, examples, run.tokenizer, batch_size=options.batch_size,
                                      tgt_seq_length=tgt_seq_length)

        fit_on_files(model, run.args, read, collate=collate_for(run.tokenizer), evaluate=evaluate)


def infer_main(argv: Sequence[str] | None = None) -> None:
    """``inference/run_text2text_infer.py``."""
    run = parse_run(infer_parser(__doc__, add_text2text_flags), argv)
    options: InferOptions = run.options(InferOptions)
    model = Text2text(run.model_config, run.tokenizer.vocab_size)
    load_finetuned_weights(model, options.load_model_path)
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    examples = read_text2text(options.test_path, run.tokenizer, options.seq_length, run.args.tgt_seq_length,
                              with_targets=False)
    require_examples(options.test_path, examples)
    texts = generate_texts(model, examples, run.tokenizer, batch_size=options.batch_size,
                           tgt_seq_length=run.args.tgt_seq_length)
    write_text_predictions(options.prediction_path, texts)


def write_text_predictions(path: str, texts: Iterator[str]) -> None:
    """The original's prediction TSV: the header ``label``, then one generated text per line; written
    atomically, so a failure leaves no partial file."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("label\n")
        f.writelines(text + "\n" for text in texts)
