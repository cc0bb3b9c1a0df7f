"""resize_vocab: logits of base-only text unchanged, new rows follow the mean rule, every checkpoint layout."""

from __future__ import annotations

import json
import os

import pytest
import sentencepiece as spm
import torch

from tencentpretrain.checkpoint import load_checkpoint, load_state_dict, save_checkpoint, save_file
from tencentpretrain.convert.stream import ShardLayout
from tencentpretrain.errors import CheckpointError, ConfigError, TokenizerError
from tencentpretrain.models.model import build_model
from tencentpretrain.vocab.build import VocabBuildConfig, build_vocab
from tencentpretrain.vocab.merge import (
    MergeConfig,
    load_model_proto,
    merge_model_protos,
    merge_tokenizers,
    piece_text,
    serialize_model,
)
from tencentpretrain.vocab.resize import (
    ResizeConfig,
    extension_record_path,
    plan_new_rows,
    read_extension_record,
    resize_checkpoint,
    resize_state_dict,
)
from tests.helpers import tiny_llama_config, write_sharded
from tests.vocab.helpers import EN_CORPUS, read_lines

EMB, HEAD = "embedding.word.embedding.weight", "target.lm.output_layer.weight"


def base_model(vocab_size: int, **overrides):
    model = build_model(tiny_llama_config(**overrides), vocab_size)
    model.eval()
    return model


def resize(spms, src: str, dst: str, **kwargs) -> dict:
    return resize_checkpoint(ResizeConfig(input_model_path=src, output_model_path=dst,
                                          base_spm_model_path=spms.base, spm_model_path=spms.merged, **kwargs))


@pytest.fixture
def checkpoint(spms, tmp_path):
    model = base_model(spms.report.base_pieces)
    path = str(tmp_path / "base.bin")
    save_checkpoint(model, path)
    return model, path


def test_logits_of_base_only_text_are_unchanged(spms, checkpoint, tmp_path):
    model, path = checkpoint
    out = str(tmp_path / "resized.bin")
    resize(spms, path, out)
    resized = base_model(spms.report.merged_pieces)
    load_checkpoint(resized, out)  # strict: the resized checkpoint fits a model of the merged vocabulary
    sp_base = spm.SentencePieceProcessor(model_file=spms.base)
    sp_merged = spm.SentencePieceProcessor(model_file=spms.merged)
    lines = read_lines(EN_CORPUS)[:8]
    for line in lines:
        ids = sp_base.encode(line)
        assert sp_merged.encode(line) == ids  # the text is made only of base pieces in both tokenizers
        src = torch.tensor([[1] + ids])
        with torch.no_grad():
            before, after = model.logits(src), resized.logits(src)
        assert after.shape[-1] == spms.report.merged_pieces
        torch.testing.assert_close(after[..., : before.shape[-1]], before, rtol=1e-6, atol=1e-6)


def test_new_rows_are_the_mean_of_the_base_pieces_of_their_text(spms, checkpoint, tmp_path):
    model, path = checkpoint
    out = str(tmp_path / "resized.bin")
    record = resize(spms, path, out)
    old, new = load_state_dict(path), load_state_dict(out)
    plan = plan_new_rows(spms.base, spms.merged)
    merged = load_model_proto(spms.merged)
    sp_base = spm.SentencePieceProcessor(model_file=spms.base)
    v = plan.original_vocab_size
    assert record["original_vocab_size"] == v == spms.report.base_pieces
    assert record["vocab_size"] == record["rows"] == len(merged.pieces) == new[EMB].shape[0]
    for key in (EMB, HEAD):
        torch.testing.assert_close(new[key][:v], old[key], rtol=0, atol=0)
    single_chars = 0
    for j, src in enumerate(plan.sources):
        piece = merged.pieces[v + j].piece
        assert src and sp_base.decode(list(src)) == piece_text(piece).removeprefix(" ")  # decode drops one "▁"
        if len(piece) == 1 and sp_base.piece_to_id(piece) == sp_base.unk_id():
            # a character the base model had no piece for: the mean of its UTF-8 byte pieces
            assert src == tuple(sp_base.piece_to_id(f"<0x{b:02X}>") for b in piece.encode("utf-8"))
            single_chars += 1
        for key in (EMB, HEAD):
            expected = old[key][list(src)].mean(dim=0)
            torch.testing.assert_close(new[key][v + j], expected, rtol=0, atol=0)
    assert single_chars > 100 and record["fallback_ids"] == []


def test_unencodable_pieces_and_padding_rows_get_the_mean_of_all_rows(spms, tmp_path):
    # A base model without byte fallback encodes unseen characters as <unk>: those new rows use the fallback.
    nofb = build_vocab(VocabBuildConfig(corpus_paths=(EN_CORPUS,), output_model_path=str(tmp_path / "nofb.model"),
                                        vocab_size=300, byte_fallback=False)).model_path
    merged = str(tmp_path / "merged_nofb.model")
    report = merge_tokenizers(nofb, spms.zh, merged)
    model = base_model(report.base_pieces)
    src, out = str(tmp_path / "b.bin"), str(tmp_path / "r.bin")
    save_checkpoint(model, src)
    record = resize_checkpoint(ResizeConfig(input_model_path=src, output_model_path=out, base_spm_model_path=nofb,
                                            spm_model_path=merged, pad_to_multiple_of=64))
    old, new = load_state_dict(src), load_state_dict(out)
    assert record["rows"] % 64 == 0 and record["rows"] >= report.merged_pieces > record["rows"] - 64
    assert new[EMB].shape == (record["rows"], 64)
    fallback = record["fallback_ids"]
    assert len(fallback) > 100  # Chinese characters the English-only base never saw
    mean = old[EMB].mean(dim=0)
    for i in fallback + list(range(report.merged_pieces, record["rows"])):
        torch.testing.assert_close(new[EMB][i], mean, rtol=0, atol=1e-7)
    padded = base_model(record["rows"])
    load_checkpoint(padded, out)


def test_safetensors_and_sharded_checkpoints(spms, checkpoint, tmp_path):
    model, path = checkpoint
    state = model.state_dict()
    expected = resize_state_dict(state, plan_new_rows(spms.base, spms.merged), source="test")

    st_in, st_out = str(tmp_path / "m.safetensors"), str(tmp_path / "r.safetensors")
    save_file(state, st_in)
    resize(spms, st_in, st_out)
    got = load_state_dict(st_out)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)

    shard_in, shard_out = str(tmp_path / "sharded"), str(tmp_path / "sharded_out")
    names = write_sharded(state, shard_in, max_shard_bytes=60_000)
    assert len(names) > 3
    record = resize(spms, shard_in, shard_out)
    got = load_state_dict(shard_out)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    index = json.load(open(os.path.join(shard_out, "tencentpretrain_model.bin.index.json")))
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in expected.values())
    untouched = [n for n in names if not {EMB, HEAD} & set(load_state_dict(os.path.join(shard_in, n)))]
    assert untouched
    for name in untouched:  # shards without vocabulary rows are copied byte for byte
        assert open(os.path.join(shard_in, name), "rb").read() == open(os.path.join(shard_out, name), "rb").read()
    assert read_extension_record(shard_out) == record
    assert extension_record_path(shard_out) == os.path.join(shard_out, "vocab_extension.json")


def test_hf_directory_keys_and_config(spms, tmp_path):
    v, h = spms.report.base_pieces, 16
    state = {"model.embed_tokens.weight": torch.randn(v, h), "lm_head.weight": torch.randn(v, h),
             "model.norm.weight": torch.ones(h)}
    src, out = tmp_path / "hf", tmp_path / "hf_out"
    write_sharded(state, str(src), max_shard_bytes=v * h * 4,
                  layout=ShardLayout("model.safetensors.index.json", "model-{index:05d}.safetensors"))
    (src / "config.json").write_text(json.dumps({"vocab_size": v, "hidden_size": h}))
    record = resize(spms, str(src), str(out), pad_to_multiple_of=8)
    got = load_state_dict(str(out))
    assert got["model.embed_tokens.weight"].shape == got["lm_head.weight"].shape == (record["rows"], h)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == record["rows"]
    assert sorted(record["resized_keys"]) == ["lm_head.weight", "model.embed_tokens.weight"]


def test_the_config_beside_the_checkpoint_follows(spms, checkpoint, tmp_path):
    _, path = checkpoint  # tmp_path/base.bin
    (tmp_path / "base_config.json").write_text(json.dumps({"hidden_size": 64, "vocab_size": 600}))
    resize(spms, path, str(tmp_path / "zh.bin"))
    assert json.loads((tmp_path / "zh_config.json").read_text()) == {"hidden_size": 64,
                                                                     "vocab_size": spms.report.merged_pieces}
    explicit = tmp_path / "no_vocab.json"
    explicit.write_text(json.dumps({"hidden_size": 64}))
    record = resize(spms, path, str(tmp_path / "padded.bin"), config_path=str(explicit), pad_to_multiple_of=128)
    assert json.loads((tmp_path / "padded_config.json").read_text())["vocab_size"] == record["rows"]
    with pytest.raises(ConfigError, match="not found"):
        resize(spms, path, str(tmp_path / "x.bin"), config_path=str(tmp_path / "missing.json"))
    assert not (tmp_path / "x.bin").exists()  # checked before anything is written


def test_half_precision_rows_stay_half(spms, tmp_path):
    state = {EMB: torch.randn(spms.report.base_pieces, 8, dtype=torch.bfloat16)}
    src, out = str(tmp_path / "h.bin"), str(tmp_path / "h_out.bin")
    save_file(state, src)
    resize(spms, src, out)
    assert load_state_dict(out)[EMB].dtype == torch.bfloat16


def test_errors(spms, checkpoint, tmp_path):
    _, path = checkpoint
    with pytest.raises(ConfigError, match="differ"):
        resize(spms, path, path)
    small = str(tmp_path / "small.bin")
    save_file({EMB: torch.zeros(100, 8)}, small)
    with pytest.raises(CheckpointError, match="100 rows but the base tokenizer has 600"):
        resize(spms, small, str(tmp_path / "x.bin"))
    with pytest.raises(TokenizerError, match="not an extension"):
        resize_checkpoint(ResizeConfig(input_model_path=path, output_model_path=str(tmp_path / "y.bin"),
                                       base_spm_model_path=spms.zh, spm_model_path=spms.merged))
    no_vocab = str(tmp_path / "novocab.bin")
    save_file({"encoder.x": torch.zeros(2)}, no_vocab)
    with pytest.raises(CheckpointError, match="no vocabulary tensor"):
        resize(spms, no_vocab, str(tmp_path / "z.bin"))
    with pytest.raises(CheckpointError, match="original_vocab_size"):
        read_extension_record(path)
    assert not os.path.exists(str(tmp_path / "x.bin"))


def test_mean_sources_keep_the_space_of_a_piece_even_if_the_base_strips_whitespace(spms, tmp_path):
    base = load_model_proto(spms.base)
    base.normalizer_spec.remove_extra_whitespaces = True  # the original SentencePiece default (not LLaMA's)
    merged, added, _ = merge_model_protos(base, load_model_proto(spms.zh), MergeConfig())
    base_path, merged_path = tmp_path / "b.model", tmp_path / "m.model"
    base_path.write_bytes(serialize_model(base))
    merged_path.write_bytes(serialize_model(merged))
    plan = plan_new_rows(str(base_path), str(merged_path))
    sp_base = spm.SentencePieceProcessor(model_file=str(base_path))
    spaced = [(p, src) for p, src in zip(added, plan.sources, strict=True) if p.startswith("▁")]
    assert len(spaced) > 20
    assert all(sp_base.id_to_piece(src[0]).startswith("▁") for _, src in spaced)
