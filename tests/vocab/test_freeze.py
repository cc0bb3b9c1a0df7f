"""freeze_for_vocab_extension: what trains in each mode; old rows stay bit-identical under AdamW weight decay."""

from __future__ import annotations

import pytest
import torch

from tencentpretrain.checkpoint import save_checkpoint
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.models.model import build_model
from tencentpretrain.vocab.freeze import freeze_for_vocab_extension, resolve_original_vocab_size
from tencentpretrain.vocab.resize import ResizeConfig, resize_checkpoint
from tests.helpers import tiny_llama_config

OLD, NEW = 96, 128  # base rows, rows after the extension
EMB, HEAD = "embedding.word.embedding.weight", "target.lm.output_layer.weight"


def make_model(**overrides):
    model = build_model(tiny_llama_config(**overrides), NEW)
    model.train()
    return model


def batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, NEW, (4, 17), generator=g)  # old and new ids both appear
    return ids[:, :-1], ids[:, 1:], torch.ones(4, 16, dtype=torch.long)


def train(model, optimizer, steps: int, first_seed: int = 0):
    for step in range(steps):
        src, tgt, seg = batch(first_seed + step)
        model(src, tgt, seg).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def adamw(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_embeddings_mode_trains_only_embedding_and_head(tiny_config):
    model = make_model()
    before = snapshot(model)
    freeze = freeze_for_vocab_extension(model, "embeddings", OLD)
    assert freeze.trainable == [EMB, HEAD]
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == [EMB, HEAD]
    optimizer = adamw(model)
    freeze.attach_optimizer(optimizer)
    train(model, optimizer, 3)
    after = model.state_dict()
    for key in before:
        if key in (EMB, HEAD):
            assert not torch.equal(after[key][:OLD], before[key][:OLD])  # old rows train too
            assert not torch.equal(after[key][OLD:], before[key][OLD:])
        else:
            assert torch.equal(after[key], before[key]), key


def test_new_rows_mode_keeps_old_rows_bit_identical_under_weight_decay():
    model = make_model()
    before = snapshot(model)
    freeze = freeze_for_vocab_extension(model, "new_rows", OLD)
    optimizer = adamw(model)
    freeze.attach_optimizer(optimizer)
    train(model, optimizer, 3)
    after = model.state_dict()
    for key in (EMB, HEAD):
        assert torch.equal(after[key][:OLD], before[key][:OLD])
        changed = (after[key][OLD:] != before[key][OLD:]).any(dim=1)
        assert changed.all()  # weight decay moves every new row, gradients most of them
    for key in before:
        if key not in (EMB, HEAD):
            assert torch.equal(after[key], before[key]), key


def test_gradients_of_old_rows_are_zero():
    model = make_model()
    freeze_for_vocab_extension(model, "new_rows", OLD)
    src, tgt, seg = batch(0)
    model(src, tgt, seg).loss.backward()
    for name, param in model.named_parameters():
        if name in (EMB, HEAD):
            assert param.grad[:OLD].abs().sum() == 0 and param.grad[OLD:].abs().sum() > 0
        else:
            assert param.grad is None


def test_without_the_optimizer_hook_weight_decay_would_move_old_rows():
    """Why attach_optimizer exists: the masked gradient alone does not protect old rows from AdamW decay."""
    model = make_model()
    before = snapshot(model)
    freeze_for_vocab_extension(model, "new_rows", OLD)
    train(model, adamw(model), 1)
    assert not torch.equal(model.state_dict()[EMB][:OLD], before[EMB][:OLD])


def test_old_rows_stay_fixed_with_optimizer_state_from_earlier_training():
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    train(model, optimizer, 2)  # full training leaves momentum on every row
    frozen = snapshot(model)
    freeze = freeze_for_vocab_extension(model, "new_rows", OLD)
    freeze.attach_optimizer(optimizer)
    train(model, optimizer, 2, first_seed=10)
    for key in (EMB, HEAD):
        assert torch.equal(model.state_dict()[key][:OLD], frozen[key][:OLD])
    freeze.remove()
    train(model, optimizer, 1, first_seed=20)  # hooks removed: old rows move again
    assert not torch.equal(model.state_dict()[EMB][:OLD], frozen[EMB][:OLD])


def test_tied_embedding_and_head():
    model = make_model(tie_weights=True)
    before = snapshot(model)
    freeze = freeze_for_vocab_extension(model, "new_rows", OLD)
    assert freeze.trainable == [EMB]
    optimizer = adamw(model)
    freeze.attach_optimizer(optimizer)
    train(model, optimizer, 2)
    weight = model.embedding.word.embedding.weight
    assert weight is model.target.lm.output_layer.weight
    assert torch.equal(weight[:OLD], before[EMB][:OLD]) and not torch.equal(weight[OLD:], before[EMB][OLD:])


def test_bad_arguments():
    model = make_model()
    with pytest.raises(ConfigError, match="train_only"):
        freeze_for_vocab_extension(model, "layers", OLD)
    with pytest.raises(ConfigError, match="no new rows"):
        freeze_for_vocab_extension(model, "new_rows", NEW)


def test_original_vocab_size_comes_from_the_flag_or_the_resize_record(spms, tmp_path):
    assert resolve_original_vocab_size(123, None) == 123
    src, out = str(tmp_path / "b.bin"), str(tmp_path / "r.bin")
    save_checkpoint(build_model(tiny_llama_config(), spms.report.base_pieces), src)
    resize_checkpoint(ResizeConfig(input_model_path=src, output_model_path=out, base_spm_model_path=spms.base,
                                   spm_model_path=spms.merged))
    assert resolve_original_vocab_size(None, out) == spms.report.base_pieces
    with pytest.raises(CheckpointError, match="original_vocab_size"):
        resolve_original_vocab_size(None, src)
    with pytest.raises(ConfigError, match="original_vocab_size"):
        resolve_original_vocab_size(None, None)


def test_a_model_moved_after_the_freeze_gets_its_saved_rows_moved_once():
    """The trainer freezes on the device; a model moved later (here to float64, as a device move would be) has its
    saved old rows converted at the first restore and kept that way, not converted again at every step."""
    model = make_model()
    before = snapshot(model)
    freeze = freeze_for_vocab_extension(model, "new_rows", OLD)
    model.double()
    optimizer = adamw(model)
    freeze.attach_optimizer(optimizer)
    train(model, optimizer, 1)
    saved = list(freeze._frozen_rows)
    assert all(rows.dtype == torch.float64 for rows in saved)
    train(model, optimizer, 1, first_seed=1)
    assert all(a is b for a, b in zip(saved, freeze._frozen_rows))  # converted once
    after = model.state_dict()
    for key in (EMB, HEAD):
        assert torch.equal(after[key][:OLD], before[key][:OLD].double())
        assert not torch.equal(after[key][OLD:], before[key][OLD:].double())
