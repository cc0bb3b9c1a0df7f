"""TencentPretrain LLaMA -> GGUF (the llama.cpp file format), through the ``gguf`` package of the llama.cpp project.

Architectures: each HF family that llama.cpp runs declares its GGUF architecture and tensor map
(``HfFamily.gguf``); the export picks the one that computes what the config computes (``gguf_family``).
llama.cpp's ``llama`` architecture rotates adjacent pairs of dimensions, i.e. Meta's interleaved RoPE layout,
which is ours; llama.cpp's own HF converter un-permutes HF's Q/K back to it. So for ``llama`` Q and K are
written as they are, and the GGUF map below is a pure rename, like the Meta one. ``qwen2`` (Q/K/V biases)
rotates halves, as HF does: its map (in ``families/qwen2.py``) permutes Q and K to HF's row order.

Types: 1-D tensors (norms) are always f32; 2-D weights take the requested type. q8_0 and q4_0 quantize rows
in blocks of 32; a weight whose rows are not a multiple of 32 is written as f16 instead (logged).

Refused: a config none of those architectures computes (SiLU gated feed-forward, RMS norm, pre-norm, RoPE, no
biases but Qwen2's...): the file would load and silently run another function (``gguf_family``).

Metadata: architecture (sizes, head counts, rope theta and scaling, RMS eps, context length), the tokenizer
(pieces, scores and piece types from the SentencePiece model, bos/eos/unk/pad ids, dummy-prefix flag) and
the chat template of ``tencentpretrain.tokenizers.templates``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from tencentpretrain.atomic import atomic_path
from tencentpretrain.config import ModelConfig
from tencentpretrain.convert.gguf_map import llama_gguf_weight_map  # noqa: F401 (its public home before)
from tencentpretrain.convert.hf_family import HfFamily, check_exportable
from tencentpretrain.convert.stream import expected_shapes, iter_tensors, list_keys
from tencentpretrain.convert.weight_map import check_complete
from tencentpretrain.errors import ConfigError
from tencentpretrain.vocab.check import check_vocab_sizes

logger = logging.getLogger(__name__)

OUTTYPES = ("f32", "f16", "q8_0", "q4_0")
PAD_PIECE_SCORE = -1000.0


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ConfigError("GGUF export needs the gguf package: pip install gguf") from None
    return gguf


@dataclass(frozen=True)
class GgufOptions:
    """What to write besides the weights."""

    outtype: str = "f16"  # one of OUTTYPES
    name: str | None = None  # general.name (default: the output file's stem)
    chat_template: str | None = None
    allow_vocab_padding: bool = False  # embedding rows beyond the tokenizer become [PADi] tokens


def tensor_type(outtype: str, tensor: torch.Tensor):
    """The GGML type a tensor gets for ``outtype``: norms f32, rows not divisible by the block size f16."""
    gguf = _gguf()
    if tensor.dim() < 2 or outtype == "f32":
        return gguf.GGMLQuantizationType.F32
    if outtype == "f16":
        return gguf.GGMLQuantizationType.F16
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[outtype]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if tensor.shape[-1] % block:
        return gguf.GGMLQuantizationType.F16
    return qtype


def encode_tensor(tensor: torch.Tensor, qtype) -> np.ndarray:
    """``tensor`` as the numpy array ``GGUFWriter.add_tensor`` takes for ``qtype`` (quantized: raw bytes)."""
    gguf = _gguf()
    data = tensor.detach().to(torch.float32).numpy()
    if qtype == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(data)
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data, qtype)


def _file_type(outtype: str) -> int:
    f = _gguf().LlamaFileType
    return {"f32": f.ALL_F32, "f16": f.MOSTLY_F16, "q8_0": f.MOSTLY_Q8_0, "q4_0": f.MOSTLY_Q4_0}[outtype]


def add_architecture_metadata(writer, config: ModelConfig, vocab_size: int, outtype: str, name: str) -> None:
    gguf = _gguf()
    writer.add_name(name)
    writer.add_context_length(config.max_seq_length)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.layers_num)
    writer.add_feed_forward_length(config.feedforward_size)
    writer.add_head_count(config.heads_num)
    writer.add_head_count_kv(config.kv_heads_num)
    writer.add_rope_dimension_count(config.head_size)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.layernorm_eps)
    writer.add_vocab_size(vocab_size)
    if config.head_size * config.heads_num != config.hidden_size:
        writer.add_key_length(config.head_size)
        writer.add_value_length(config.head_size)
    if config.rope_scaling:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(config.rope_scaling_factor)
    writer.add_file_type(_file_type(outtype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def add_tokenizer_metadata(writer, spm_model_path: str, vocab_size: int, chat_template: str | None) -> None:
    """Pieces, scores and types of the SentencePiece model (padded with unused ``[PADi]`` up to ``vocab_size``),
    special ids and the chat template."""
    from sentencepiece import sentencepiece_model_pb2

    from tencentpretrain.convert.hf_tokenizer import load_sentencepiece, special_tokens

    gguf = _gguf()
    proto = sentencepiece_model_pb2.ModelProto()
    with open(spm_model_path, "rb") as f:
        proto.ParseFromString(f.read())
    tokens = [p.piece.encode("utf-8") for p in proto.pieces]
    scores = [p.score for p in proto.pieces]
    types = [int(p.type) for p in proto.pieces]  # SentencePiece's piece types use GGUF's TokenType numbering
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(PAD_PIECE_SCORE)
        types.append(int(gguf.TokenType.UNUSED))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    specials = special_tokens(load_sentencepiece(spm_model_path))
    for name, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        if specials.id(name) is not None:
            add(specials.id(name))
    writer.add_add_bos_token(specials.bos is not None)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(space_prefix(proto.normalizer_spec, spm_model_path))
    if chat_template:
        writer.add_chat_template(chat_template)


def gguf_problems(family: HfFamily, config: ModelConfig, vocab_size: int) -> list[str]:
    """What llama.cpp's ``family.gguf.arch`` would compute differently from ``config`` (empty: nothing).

    That is the HF family's architecture (checked by its round trip) with the activation fixed to SiLU: llama.cpp
    has no activation field for these architectures, so any other one would be replaced without a word.
    """
    problems = []
    if config.hidden_act != "silu":
        problems.append(f"hidden_act={config.hidden_act!r} (llama.cpp's {family.gguf.arch} runs 'silu')")
    try:
        check_exportable(family, config, vocab_size)
    except ConfigError as e:
        problems.append(str(e).split("cannot represent this config: ", 1)[-1].split(". Writing it", 1)[0])
    return problems


def gguf_family(config: ModelConfig, vocab_size: int) -> HfFamily:
    """The HF family (``HfFamily`` with a ``gguf`` architecture) whose llama.cpp architecture computes what
    ``config`` computes: ``llama`` for LLaMA, ``qwen2`` for a config with Q/K/V biases. A ConfigError naming what
    the closest architecture lacks otherwise."""
    from tencentpretrain.convert.families import registry

    candidates = [family for _, family in sorted(registry().items()) if family.gguf is not None]
    found = {family.gguf.arch: gguf_problems(family, config, vocab_size) for family in candidates}
    for family in candidates:
        if not found[family.gguf.arch]:
            return family
    closest = min(found, key=lambda arch: (len(found[arch]), arch != "llama"))
    raise ConfigError(f"GGUF arch={closest} cannot represent this config: " + "; ".join(found[closest])
                      + ". llama.cpp would run another function; only models of the GGUF architectures ("
                      + ", ".join(sorted(found)) + ") can be exported")


def space_prefix(spec, spm_model_path: str) -> bool:
    """``tokenizer.ggml.add_space_prefix``: SentencePiece's ``add_dummy_prefix``; warns about normalization that
    llama.cpp's ``llama`` tokenizer does not do.

    With the flag llama.cpp prefixes "▁" to the text after ``<s>`` and after every special token, which is what
    our chat encoding does (each text segment is encoded on its own, with SentencePiece's dummy prefix): prompts
    rendered with the GGUF's chat template then tokenize to the ids the model was trained on. The flag also makes
    ``llama_detokenize`` drop the first piece's space, as SentencePiece does; text streamed piece by piece
    (``llama_token_to_piece``, what llama-server sends) keeps it, so an answer whose first piece is "▁好" shows
    " 好" there (as Meta's Llama-2-chat answers do).
    """
    if spec.remove_extra_whitespaces or spec.precompiled_charsmap:
        logger.warning("%s: SentencePiece normalizes text here (normalizer %r, remove_extra_whitespaces=%s) and "
                       "llama.cpp's tokenizer does not: text that the normalization changes (repeated spaces, "
                       "full-width characters) will tokenize differently in llama.cpp", spm_model_path, spec.name,
                       spec.remove_extra_whitespaces)
    return bool(spec.add_dummy_prefix)


def convert_tencentpretrain_to_gguf(
    input_path: str, output_path: str, config: ModelConfig, spm_model_path: str, options: GgufOptions = GgufOptions()
) -> dict[str, str]:
    """Write a GGUF file llama.cpp runs; returns GGUF tensor name -> GGML type name."""
    from tencentpretrain.convert.hf import embedding_rows
    from tencentpretrain.convert.hf_tokenizer import load_sentencepiece

    if options.outtype not in OUTTYPES:
        raise ConfigError(f"unknown GGUF type {options.outtype!r}; choose from {', '.join(OUTTYPES)}")
    if config.tie_weights:
        logger.info("tied embeddings: output.weight is written as its own copy")
    keys = list_keys(input_path)
    rows = embedding_rows(input_path, keys)
    check_vocab_sizes(tokenizer=load_sentencepiece(spm_model_path).get_piece_size(), embedding=rows,
                      config=config.vocab_size, source=input_path, allow_padding=options.allow_vocab_padding)
    check_complete(keys, expected_shapes(config, rows), what=f"{input_path} (for the config given)")
    family = gguf_family(config, rows)
    plan = family.gguf.weight_map(config).export_plan(keys, source=input_path)
    gguf = _gguf()
    name = options.name or os.path.splitext(os.path.basename(output_path))[0]
    types: dict[str, str] = {}
    with atomic_path(output_path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch=family.gguf.arch)
        add_architecture_metadata(writer, config, rows, options.outtype, name)
        add_tokenizer_metadata(writer, spm_model_path, rows, options.chat_template)
        for _, key, tensor in iter_tensors(input_path):
            for gguf_name, converted in plan.convert(key, tensor).items():
                qtype = tensor_type(options.outtype, converted)
                if qtype.name.lower() != options.outtype and converted.dim() == 2:
                    logger.warning("%s: rows of %d are not a multiple of the %s block; written as %s",
                                   key, converted.shape[-1], options.outtype, qtype.name)
                writer.add_tensor(gguf_name, encode_tensor(converted, qtype), raw_dtype=qtype)
                types[gguf_name] = qtype.name
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return types
