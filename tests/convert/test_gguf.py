"""GGUF export: tensors, types and metadata read back with gguf.GGUFReader; llama.cpp runs it (when installed)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import sentencepiece
import torch

from scripts import convert_tencentpretrain_to_gguf as gguf_script
from tencentpretrain.convert.llama_gguf import GgufOptions, convert_tencentpretrain_to_gguf
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.tokenizers.templates import get_template
from tests.convert.common import SPM_PATH, TEXTS, greedy, save_tiny

gguf = pytest.importorskip("gguf")

QUANT_FRIENDLY = dict(feedforward_size=192, rope_theta=1e6, layernorm_eps=1e-5)  # every row a multiple of 32


def _export(tmp_path, outtype: str, *, std: float = 0.02, **overrides):
    model, path, config_path = save_tiny(str(tmp_path), std=std, **{**QUANT_FRIENDLY, **overrides})
    out = str(tmp_path / f"model-{outtype}.gguf")
    assert gguf_script.main(["--input_model_path", path, "--config_path", config_path, "--spm_model_path", SPM_PATH,
                             "--output_model_path", out, "--outtype", outtype]) == 0
    return model, out


def _field(reader, key):
    field = reader.fields[key]
    if field.types[0] == gguf.GGUFValueType.ARRAY:
        if field.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]) for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode()
    return field.parts[-1].tolist()[0]


def test_metadata(tmp_path):
    model, out = _export(tmp_path, "f16")
    reader = gguf.GGUFReader(out)
    c = model.config
    expected = {
        "general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
        "llama.feed_forward_length": 192, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 16, "llama.context_length": c.max_seq_length, "llama.vocab_size": 700,
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.add_bos_token": True,
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_F16),
        "tokenizer.chat_template": get_template("user_bot").chat_template,
    }
    assert {k: _field(reader, k) for k in expected} == expected
    assert _field(reader, "llama.rope.freq_base") == pytest.approx(1e6)
    assert _field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    sp = sentencepiece.SentencePieceProcessor(model_file=SPM_PATH)
    assert _field(reader, "tokenizer.ggml.tokens") == [sp.id_to_piece(i).encode() for i in range(700)]
    np.testing.assert_allclose(_field(reader, "tokenizer.ggml.scores"), [sp.get_score(i) for i in range(700)])
    types = _field(reader, "tokenizer.ggml.token_type")
    assert (types[0], types[1], types[2], types[3], types[258], types[259]) == (2, 3, 3, 6, 6, 1)  # unk ctl byte


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0", "q4_0"])
def test_tensors_and_types(tmp_path, outtype):
    model, out = _export(tmp_path, outtype)
    reader = gguf.GGUFReader(out)
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 9 * 2 + 1
    state = model.state_dict()
    pairs = {"token_embd.weight": "embedding.word.embedding.weight",
             "blk.1.attn_k.weight": "encoder.transformer.1.self_attn.linear_layers.1.weight",  # no permutation
             "blk.0.ffn_down.weight": "encoder.transformer.0.feed_forward.linear_2.weight",
             "blk.0.attn_norm.weight": "encoder.transformer.0.layer_norm_1.weight",
             "output.weight": "target.lm.output_layer.weight"}
    tolerance = {"f32": 0, "f16": 1e-3, "q8_0": 0.02, "q4_0": 0.2}[outtype]
    for name, key in pairs.items():
        tensor, original = tensors[name], state[key]
        expected_type = "F32" if original.dim() == 1 else outtype.upper()
        assert tensor.tensor_type.name == expected_type, name
        assert [int(d) for d in tensor.shape] == list(reversed(original.shape))  # GGUF lists ne0 (columns) first
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(original.shape)
        error = np.abs(values - original.numpy()).max() / original.abs().max().item()
        assert error <= tolerance, (name, error)


def test_rows_not_divisible_by_the_block_fall_back_to_f16(tmp_path):
    _, out = _export(tmp_path, "q4_0", feedforward_size=176)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert types["blk.0.ffn_down.weight"] == "F16" and types["blk.0.ffn_up.weight"] == "Q4_0"


def test_vocabulary_padding(tmp_path):
    model, path, config_path = save_tiny(str(tmp_path), vocab_size=704)
    with pytest.raises(CheckpointError, match="tokenizer 700 pieces, embedding 704 rows, config vocab_size 704"):
        convert_tencentpretrain_to_gguf(path, str(tmp_path / "m.gguf"), model.config, SPM_PATH)
    convert_tencentpretrain_to_gguf(path, str(tmp_path / "m.gguf"), model.config, SPM_PATH,
                                    GgufOptions(outtype="f32", allow_vocab_padding=True))
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    assert _field(reader, "tokenizer.ggml.tokens")[-4:] == [b"[PAD700]", b"[PAD701]", b"[PAD702]", b"[PAD703]"]
    assert _field(reader, "tokenizer.ggml.token_type")[-1] == int(gguf.TokenType.UNUSED)


def _spm_variant(tmp_path, **normalizer) -> str:
    """A copy of the tiny SentencePiece model with ``normalizer_spec`` fields changed."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    with open(SPM_PATH, "rb") as f:
        proto.ParseFromString(f.read())
    for name, value in normalizer.items():
        setattr(proto.normalizer_spec, name, value)
    path = str(tmp_path / "variant.model")
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return path


@pytest.mark.parametrize("dummy_prefix", [True, False])
def test_space_prefix_is_the_dummy_prefix(tmp_path, dummy_prefix, caplog):
    model, path, _ = save_tiny(str(tmp_path))
    spm = _spm_variant(tmp_path, add_dummy_prefix=dummy_prefix)
    convert_tencentpretrain_to_gguf(path, str(tmp_path / "m.gguf"), model.config, spm, GgufOptions(outtype="f32"))
    assert _field(gguf.GGUFReader(str(tmp_path / "m.gguf")), "tokenizer.ggml.add_space_prefix") is dummy_prefix
    assert "normalizes text" not in caplog.text


def test_normalization_llama_cpp_does_not_do_is_a_warning(tmp_path, caplog):
    model, path, _ = save_tiny(str(tmp_path))
    spm = _spm_variant(tmp_path, remove_extra_whitespaces=True)
    convert_tencentpretrain_to_gguf(path, str(tmp_path / "m.gguf"), model.config, spm, GgufOptions(outtype="f32"))
    assert "remove_extra_whitespaces=True) and llama.cpp's tokenizer does not" in caplog.text


# ---------------------------------------------------------------------------------------------- llama.cpp
PROMPTS = [TEXTS["chinese"], "The quick brown fox jumps over the lazy dog"]


def _llama(path: str):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(path, n_ctx=128, n_threads=1, logits_all=True, verbose=False)


def _llama_greedy(llm, prompt: list[int], steps: int) -> list[int]:
    tokens = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        tokens.append(token)
        if len(tokens) == steps:
            break
    return tokens


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_llama_cpp_greedy_equals_ours(tmp_path, outtype):
    pytest.importorskip("llama_cpp")
    model, out = _export(tmp_path, outtype, std=0.15)  # peaked logits: greedy is decided by clear margins
    llm = _llama(out)
    sp = sentencepiece.SentencePieceProcessor(model_file=SPM_PATH)
    for text in PROMPTS:
        prompt = [sp.bos_id(), *sp.encode(text)]
        assert llm.tokenize(text.encode(), add_bos=True) == prompt  # llama.cpp's tokenizer agrees with ours
        assert _llama_greedy(llm, prompt, 16) == greedy(model, prompt, 16), text


@pytest.mark.parametrize(("outtype", "min_cosine"), [("q8_0", 0.99), ("q4_0", 0.9)])
def test_llama_cpp_quantized_loads_and_generates(tmp_path, outtype, min_cosine):
    pytest.importorskip("llama_cpp")
    model, out = _export(tmp_path, outtype, std=0.05)
    llm = _llama(out)
    sp = sentencepiece.SentencePieceProcessor(model_file=SPM_PATH)
    prompt = [sp.bos_id(), *sp.encode(PROMPTS[0])]
    assert len(_llama_greedy(llm, prompt, 8)) == 8
    llm.reset()
    llm.eval(prompt)
    theirs = torch.tensor(np.array(llm.scores[: len(prompt)]))
    with torch.no_grad():
        ours = model.logits(torch.tensor([prompt]))[0]
    cosine = torch.nn.functional.cosine_similarity(theirs, ours, dim=-1)
    assert cosine.min() >= min_cosine, cosine


# ---------------------------------------------------------------------------------------------- refused configs
@pytest.mark.parametrize(("overrides", "message"), [
    (dict(hidden_act="gelu"), r"hidden_act='gelu' \(llama.cpp's llama runs 'silu'\)"),
    (dict(mask="fully_visible"), r"mask='fully_visible'"),
    (dict(layernorm="t5", remove_attention_scale=True), r"remove_attention_scale=True"),
], ids=["gelu", "bidirectional", "no-attention-scale"])
def test_a_config_llama_cpp_does_not_compute_is_refused(tmp_path, overrides, message):
    """arch=llama fixes SiLU, causal attention, the 1/sqrt(d) scale...: anything else would run the wrong function."""
    _, path, config_path = save_tiny(str(tmp_path), **{**QUANT_FRIENDLY, **overrides})
    out = str(tmp_path / "model.gguf")
    with pytest.raises(ConfigError, match=rf"GGUF arch=llama cannot represent this config: .*{message}"):
        gguf_script.main(["--input_model_path", path, "--config_path", config_path, "--spm_model_path", SPM_PATH,
                          "--output_model_path", out])  # run(main) makes it one line and exit status 2
    assert not os.path.exists(out)


def test_a_bert_checkpoint_is_refused(tmp_path):
    from tencentpretrain.checkpoint import save_file
    from tencentpretrain.config import load_model_config
    from tencentpretrain.models.model import build_model
    from tests.helpers import REPO_ROOT

    config = load_model_config(os.path.join(REPO_ROOT, "models", "bert", "tiny_config.json")).replace(vocab_size=700)
    save_file(build_model(config).state_dict(), str(tmp_path / "bert.bin"))
    with pytest.raises(ConfigError, match=r"GGUF arch=llama cannot represent this config: .*rotary_position_embedding"):
        convert_tencentpretrain_to_gguf(str(tmp_path / "bert.bin"), str(tmp_path / "bert.gguf"), config, SPM_PATH)
    assert not os.path.exists(tmp_path / "bert.gguf")


SPM_SPACE = sentencepiece.SentencePieceProcessor(model_file=SPM_PATH).piece_to_id("\u2581")  # "▁"
# A conversation with a system message, an answer and a second question.
CHAT = [{"role": "system", "content": "你是一个助手。"}, {"role": "user", "content": "北京有什么好玩的地方？"},
        {"role": "assistant", "content": "故宫和长城, ok"}, {"role": "user", "content": "谢谢"}]


def _render(chat_template: str, messages) -> str:
    """``chat_template`` rendered as llama.cpp's and HF's Jinja chat formatters do."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(chat_template).render(messages=messages, bos_token="<s>", eos_token="</s>",
                                                         add_generation_prompt=True)


def _vocab_only(tmp_path, template_name: str, **overrides):
    """(llama_cpp, a vocabulary-only llama.cpp model of our GGUF with ``overrides`` of its metadata)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    model, path, _ = save_tiny(str(tmp_path))
    out = str(tmp_path / "m.gguf")
    options = GgufOptions(outtype="f32", chat_template=get_template(template_name).chat_template)
    convert_tencentpretrain_to_gguf(path, out, model.config, SPM_PATH, options)
    return llama_cpp, llama_cpp.Llama(out, vocab_only=True, verbose=False, kv_overrides=overrides or None)


def _tokenized_by_llama_cpp_and_us(tmp_path, name: str, messages, **overrides) -> tuple[list[int], list[int]]:
    from tencentpretrain.tokenizers import build_tokenizer
    from tencentpretrain.tokenizers.templates import encode_chat

    _, llm = _vocab_only(tmp_path, name, **overrides)
    text = _render(llm.metadata["tokenizer.chat_template"], messages)
    ours = encode_chat(build_tokenizer("sentencepiece", spm_model_path=SPM_PATH), get_template(name), messages,
                       add_generation_prompt=True).ids
    return llm.tokenize(text.encode(), add_bos=False, special=True), ours


@pytest.mark.parametrize("name", ["user_bot", "llama2", "alpaca", "plain"])
@pytest.mark.parametrize("turns", ["one question", "system and question", "conversation"])
def test_llama_cpp_tokenizes_chat_prompts_as_we_trained(tmp_path, name, turns):
    """With add_space_prefix llama.cpp puts "▁" after <s> and after each special token, as our encoding of each
    text segment does: the GGUF's chat template rendered and tokenized by llama.cpp gives our ids."""
    messages = {"one question": CHAT[1:2], "system and question": CHAT[:2], "conversation": CHAT}[turns]
    theirs, ours = _tokenized_by_llama_cpp_and_us(tmp_path, name, messages)
    assert theirs == ours


def test_without_the_space_prefix_llama_cpp_would_tokenize_otherwise(tmp_path):
    theirs, ours = _tokenized_by_llama_cpp_and_us(tmp_path, "user_bot", CHAT,
                                                  **{"tokenizer.ggml.add_space_prefix": False})
    assert ours[1] == SPM_SPACE and theirs[1] != SPM_SPACE  # <s> "▁" "你" ... ours; <s> "你" ... theirs


def test_llama_cpp_detokenizes_an_answer_as_we_do(tmp_path):
    """An answer starts with a "▁" piece (its segment's dummy prefix). llama_detokenize drops that space, as
    SentencePiece does, because the GGUF sets add_space_prefix; piece by piece (what llama-server streams) the
    space shows."""
    import ctypes

    llama_cpp, llm = _vocab_only(tmp_path, "user_bot")
    sp = sentencepiece.SentencePieceProcessor(model_file=SPM_PATH)
    answer = sp.encode(CHAT[2]["content"])
    assert sp.id_to_piece(answer[0]).startswith("\u2581")
    vocab = getattr(llm._model, "vocab", None) or llm._model.model  # llama-cpp-python >= 0.3.8 passes the vocab
    buffer = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_detokenize(vocab, (llama_cpp.llama_token * len(answer))(*answer), len(answer), buffer, 256,
                                   False, False)
    assert buffer.raw[:n].decode() == sp.decode(answer) == "故宫和长城, ok"
    streamed = b"".join(llm.detokenize([token]) for token in answer).decode()
    assert streamed == " " + sp.decode(answer)
