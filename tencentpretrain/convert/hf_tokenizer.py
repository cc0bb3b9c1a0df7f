"""The HF tokenizer files of a converted model: tokenizer.model, tokenizer.json, tokenizer_config.json,
special_tokens_map.json, with real bos/eos tokens and the chat template of ``tencentpretrain.tokenizers.templates``.

``tokenizer.json`` is built from the SentencePiece model through transformers' own converter, then its text
handling is set to do exactly what SentencePiece does: transformers' Llama defaults (a Metaspace
pre-tokenizer) drop the dummy prefix of a text that starts with a space, so " hi" would encode differently
from training. Before anything is written, the result is checked against SentencePiece on Chinese, mixed,
emoji and whitespace probes and on every vocabulary entry; any difference is a TokenizerError.
``tokenizer_config.json`` names ``PreTrainedTokenizerFast`` so that every transformers version loads that
file as written (the ``LlamaTokenizer`` class of transformers 5 rebuilds the pre-tokenizer).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

from tencentpretrain.atomic import write_json
from tencentpretrain.errors import TokenizerError

logger = logging.getLogger(__name__)

SPIECE_UNDERLINE = "\u2581"
PROBES = (
    "北京有什么好玩的地方？",
    "中文和English混合, 123 个数字 and 4.5%",
    "emoji 😀🎉 test 👍🏽 完成",
    " leading space",
    "  two leading spaces",
    "trailing spaces  ",
    "line one\nline two\n\n  indented",
    "tabs\tand\tsymbols <>{}[]()#@!~",
    "User: 你好\nBot:",
)


@dataclass(frozen=True)
class SpecialTokens:
    """Special tokens of a SentencePiece model (piece, id), None where the model has none."""

    bos: tuple[str, int] | None
    eos: tuple[str, int] | None
    unk: tuple[str, int] | None
    pad: tuple[str, int] | None

    def piece(self, name: str) -> str | None:
        value = getattr(self, name)
        return value[0] if value else None

    def id(self, name: str) -> int | None:
        value = getattr(self, name)
        return value[1] if value else None


def special_tokens(sp) -> SpecialTokens:
    """The special tokens of a ``sentencepiece.SentencePieceProcessor`` (ids < 0 mean absent)."""

    def get(token_id: int) -> tuple[str, int] | None:
        return (sp.id_to_piece(token_id), token_id) if token_id >= 0 else None

    return SpecialTokens(get(sp.bos_id()), get(sp.eos_id()), get(sp.unk_id()), get(sp.pad_id()))


def load_sentencepiece(path: str):
    """A ``SentencePieceProcessor`` for ``path``, with a TokenizerError when it cannot be read."""
    import sentencepiece

    if not os.path.isfile(path):
        raise TokenizerError(f"{path}: SentencePiece model not found (--spm_model_path)")
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.Load(model_file=path)
    except (OSError, RuntimeError) as e:
        raise TokenizerError(f"{path}: not a SentencePiece model ({e})") from None
    return sp


def normalizer_spec(path: str):
    """The ``normalizer_spec`` of a SentencePiece model file (add_dummy_prefix, remove_extra_whitespaces...)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return proto.normalizer_spec


def build_backend_tokenizer(spm_path: str):
    """A ``tokenizers.Tokenizer`` that encodes and decodes exactly like the SentencePiece model at ``spm_path``."""
    from tokenizers import decoders, normalizers, processors

    backend = _converted_backend(spm_path)
    spec = normalizer_spec(spm_path)
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        from tokenizers import Regex

        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend(SPIECE_UNDERLINE))
    steps.append(normalizers.Replace(" ", SPIECE_UNDERLINE))
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = None
    decode_steps = [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if spec.add_dummy_prefix:
        decode_steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(decode_steps)
    sp = load_sentencepiece(spm_path)
    bos = special_tokens(sp).bos
    if bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos[0]} $A", pair=f"{bos[0]} $A {bos[0]} $B:1", special_tokens=[bos]
        )
    else:
        backend.post_processor = None
    check_backend_matches(backend, sp, spm_path)
    return backend


def _converted_backend(spm_path: str):
    """transformers' conversion of the SentencePiece model (vocabulary, merges, byte fallback)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(spm_path, os.path.join(tmp, "tokenizer.model"))
        with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"tokenizer_class": "LlamaTokenizer", "legacy": True}, f)
        try:
            tokenizer = AutoTokenizer.from_pretrained(tmp)
        except Exception as e:  # transformers raises many types for a model it cannot convert
            raise TokenizerError(f"{spm_path}: transformers cannot convert this SentencePiece model ({e})") from e
        backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerError("transformers gave no fast tokenizer; install the `tokenizers` package")
    return backend


def check_backend_matches(backend, sp, source: str) -> None:
    """Raise TokenizerError unless ``backend`` has SentencePiece's vocabulary and encodes/decodes the probes
    to the same ids/text."""
    if backend.get_vocab_size(with_added_tokens=True) != sp.get_piece_size():
        raise TokenizerError(
            f"{source}: the HF tokenizer has {backend.get_vocab_size(with_added_tokens=True)} entries, "
            f"SentencePiece {sp.get_piece_size()}"
        )
    for token_id in range(sp.get_piece_size()):
        if backend.id_to_token(token_id) != sp.id_to_piece(token_id):
            raise TokenizerError(f"{source}: id {token_id} is {backend.id_to_token(token_id)!r} in the HF "
                                 f"tokenizer but {sp.id_to_piece(token_id)!r} in SentencePiece")
    for text in PROBES:
        ours, theirs = sp.encode(text), backend.encode(text, add_special_tokens=False).ids
        if ours != theirs:
            raise TokenizerError(f"{source}: the HF tokenizer encodes {text!r} as {theirs}, SentencePiece as {ours}")
        if backend.decode(ours) != sp.decode(ours):
            raise TokenizerError(f"{source}: the HF tokenizer decodes {ours} as {backend.decode(ours)!r}, "
                                 f"SentencePiece as {sp.decode(ours)!r}")


def write_hf_tokenizer(
    spm_path: str, output_dir: str, *, chat_template: str | None, model_max_length: int
) -> SpecialTokens:
    """Write the tokenizer files of an HF model directory; return the special tokens written."""
    sp = load_sentencepiece(spm_path)
    specials = special_tokens(sp)
    if specials.eos is None:
        logger.warning("%s has no end-of-sequence piece: generation with this model will not stop by itself",
                       spm_path)
    backend = build_backend_tokenizer(spm_path)
    os.makedirs(output_dir, exist_ok=True)
    shutil.copyfile(spm_path, os.path.join(output_dir, "tokenizer.model"))
    backend.save(os.path.join(output_dir, "tokenizer.json"))
    tokens = {f"{name}_token": specials.piece(name) for name in ("bos", "eos", "unk", "pad")}
    tokens = {k: v for k, v in tokens.items() if v is not None}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **tokens,
        "add_bos_token": specials.bos is not None,
        "add_eos_token": False,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",  # batched generation pads on the left
    }
    if chat_template:
        config["chat_template"] = chat_template
    write_json(os.path.join(output_dir, "tokenizer_config.json"), config)
    write_json(os.path.join(output_dir, "special_tokens_map.json"), tokens)
    return specials
