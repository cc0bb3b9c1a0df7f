"""Components declare what they are (a word embedding, vocabulary rows, tied parameters, label kinds, reading
earlier targets), and tying, vocabulary resize and freezing, the checkpoint's vocabulary hint and the processors
read those declarations, never the names ``word``, ``lm`` or ``mlm``. Each test registers a variant under a new
name, the way a contributor adds a component, and checks it keeps the behaviour the built-in one has."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.checkpoint import load_checkpoint, save_checkpoint
from tencentpretrain.config import ModelConfig, load_model_config
from tencentpretrain.data.processors.base import check_targets
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.evaluation.perplexity import evaluate_dataset_loss
from tencentpretrain.models.capabilities import registered_vocabulary_keys, tied_keys, vocabulary_keys
from tencentpretrain.models.model import build_model
from tencentpretrain.registry import EMBEDDINGS, TARGETS
from tencentpretrain.targets.lm import LmTarget
from tencentpretrain.targets.mlm import MlmTarget
from tencentpretrain.targets.output import (
    LABELS_MASKED_TOKENS,
    LABELS_NEXT_TOKENS,
    LABELS_SENTENCE_PAIR,
    TargetOutput,
)
from tencentpretrain.vocab.freeze import freeze_for_vocab_extension
from tencentpretrain.vocab.resize import RowPlan, resize_state_dict
from tests.helpers import REPO_ROOT, tiny_llama_config

V = 96
WORD_VARIANT = "scaled_word_test"
AUX_TARGET = "zloss_test"
MLM_VARIANT = "mlm_variant_test"
Z_WEIGHT = 0.01


class ScaledWordEmbedding(nn.Module):
    """A word embedding of its own (Gemma's sqrt(E) scaling), with a table named differently from ``word``'s."""

    word_weight = "table.weight"
    vocabulary_rows = ("table.weight",)

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.scale = math.sqrt(config.emb_size)
        self.table = nn.Embedding(vocab_size, config.emb_size)

    def forward(self, src: torch.Tensor, seg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.table(src) * self.scale


class ZLoss(nn.Module):
    """An auxiliary loss on the LM head's logits (PaLM's z-loss): no labels, no parameters of its own."""

    labels = None
    reads_earlier_targets = True

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()

    def forward(self, hidden, tgt, loss_mask, *, earlier) -> TargetOutput:
        log_z = torch.logsumexp(earlier["lm"].logits().float(), dim=-1)  # (N,)
        loss = Z_WEIGHT * (log_z**2).mean()
        return TargetOutput(loss, {"loss_z": loss.detach()})


@pytest.fixture(autouse=True)
def registered_variants():
    """Register the test components for one test, then remove them (other tests list the registries)."""
    added = [(EMBEDDINGS, WORD_VARIANT, ScaledWordEmbedding), (TARGETS, AUX_TARGET, ZLoss),
             (TARGETS, MLM_VARIANT, type("MlmVariant", (MlmTarget,), {}))]
    for registry, name, cls in added:
        registry.register(name)(cls)
    yield
    for registry, name, _ in added:
        registry._entries.pop(name)


def variant_model(**overrides):
    torch.manual_seed(0)
    return build_model(tiny_llama_config(**{"embedding": (WORD_VARIANT,), "tie_weights": True, **overrides}), V)


# ------------------------------------------------------------------ a word embedding under another name
def test_a_word_embedding_variant_keeps_weight_tying():
    model = variant_model()
    table = model.embedding.scaled_word_test.table.weight
    assert model.target.lm.output_layer.weight is table
    assert model.tied_parameters() == {"target.lm.output_layer.weight": f"embedding.{WORD_VARIANT}.table.weight"}
    with torch.no_grad():
        table[3].fill_(0.5)  # one tensor: the head sees the change
    assert torch.equal(model.target.lm.output_layer.weight[3], torch.full((64,), 0.5))
    untied = build_model(tiny_llama_config(embedding=(WORD_VARIANT,)), V)
    assert untied.target.lm.output_layer.weight is not untied.embedding.scaled_word_test.table.weight
    assert untied.tied_parameters() == {}


def test_a_word_embedding_variant_stays_tied_after_loading_on_meta(tmp_path):
    model = variant_model()
    path = str(tmp_path / "model.bin")
    save_checkpoint(model, path)
    with torch.device("meta"):
        empty = build_model(model.config, V, init=False)
    load_checkpoint(empty, path)
    assert empty.target.lm.output_layer.weight is empty.embedding.scaled_word_test.table.weight
    ids = torch.randint(0, V, (2, 7))
    torch.testing.assert_close(empty.eval().logits(ids), model.eval().logits(ids), rtol=0, atol=0)


def test_a_word_embedding_variant_has_vocabulary_rows_and_the_checkpoint_hint(tmp_path):
    model = variant_model()
    key = f"embedding.{WORD_VARIANT}.table.weight"
    assert model.vocabulary_keys() == [key, "target.lm.output_layer.weight"]
    assert list(model.vocabulary_parameters()) == [key]  # the tied head is the same tensor
    assert key in registered_vocabulary_keys()
    path = str(tmp_path / "small.bin")
    save_checkpoint(model, path)
    bigger = build_model(model.config, V + 8, init=False)
    with pytest.raises(CheckpointError, match=f"the checkpoint has {V} vocabulary rows, the model {V + 8}"):
        load_checkpoint(bigger, path)


def test_a_word_embedding_variant_is_resized():
    model = variant_model(tie_weights=False)
    state = model.state_dict()
    plan = RowPlan(original_vocab_size=V, vocab_size=V + 2, rows=V + 4, sources=((1, 2), ()))
    resized = resize_state_dict(state, plan, source="test")
    for key in (f"embedding.{WORD_VARIANT}.table.weight", "target.lm.output_layer.weight"):
        old, new = state[key], resized[key]
        assert new.shape == (V + 4, 64)
        assert torch.equal(new[:V], old)
        torch.testing.assert_close(new[V], old[[1, 2]].mean(0))
        torch.testing.assert_close(new[V + 1], old.mean(0))
    for key in state.keys() - set(model.vocabulary_keys()):
        assert resized[key] is state[key]


def test_a_word_embedding_variant_is_the_table_freezing_trains():
    model = variant_model()
    old = V - 16
    freeze = freeze_for_vocab_extension(model, "new_rows", old)
    assert freeze.trainable == [f"embedding.{WORD_VARIANT}.table.weight"]
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    freeze.attach_optimizer(optimizer)
    src = torch.randint(0, V, (2, 12))
    model(src, torch.roll(src, -1, 1), torch.ones_like(src)).loss.backward()
    optimizer.step()
    table = model.embedding.scaled_word_test.table.weight
    assert torch.equal(table[:old], before[f"embedding.{WORD_VARIANT}.table.weight"][:old])
    assert not torch.equal(table[old:], before[f"embedding.{WORD_VARIANT}.table.weight"][old:])
    for key, value in model.state_dict().items():
        if "table" not in key and "output_layer" not in key:
            assert torch.equal(value, before[key]), key


# ------------------------------------------------------------------ the built-in configs keep the original rules
def test_tying_of_the_shipped_configs_follows_the_original_rules():
    bert = load_model_config(f"{REPO_ROOT}/models/bert/base_config.json")
    assert tied_keys(bert) == {"target.mlm.linear_2.weight": "embedding.word.embedding.weight"}
    gpt2 = load_model_config(f"{REPO_ROOT}/models/gpt2/config.json")
    assert tied_keys(gpt2) == {"target.lm.output_layer.weight": "embedding.word.embedding.weight"}
    t5 = load_model_config(f"{REPO_ROOT}/models/t5/small_config.json")
    assert tied_keys(t5) == {"tgt_embedding.word.embedding.weight": "embedding.word.embedding.weight",
                             "target.lm.output_layer.weight": "tgt_embedding.word.embedding.weight"}
    llama = load_model_config(f"{REPO_ROOT}/models/llama/7b_config.json")
    assert tied_keys(llama) == {}
    assert vocabulary_keys(llama) == ["embedding.word.embedding.weight", "target.lm.output_layer.weight",
                                      "target.lm.output_layer.bias"]
    small_t5 = build_model(dataclasses.replace(t5, layers_num=1, decoder_layers_num=1, emb_size=32, hidden_size=32,
                                               feedforward_size=64, heads_num=2), V)
    word = small_t5.embedding.word.embedding.weight
    assert small_t5.tgt_embedding.word.embedding.weight is word and small_t5.target.lm.output_layer.weight is word


# ------------------------------------------------------------------ an auxiliary loss as its own target
def test_an_auxiliary_target_reads_lm_logits_and_keeps_lm_checkpoint_keys():
    torch.manual_seed(0)
    plain = build_model(tiny_llama_config(), V)
    torch.manual_seed(0)
    with_aux = build_model(tiny_llama_config(target=("lm", AUX_TARGET)), V)
    assert list(with_aux.state_dict()) == list(plain.state_dict())
    with_aux.load_state_dict(plain.state_dict())
    src = torch.randint(0, V, (2, 10))
    tgt, seg = torch.roll(src, -1, 1), torch.ones_like(src)
    mask = torch.rand(2, 10) < 0.7
    out = with_aux(src, tgt, seg, mask)
    hidden = plain.hidden_states(src, seg)[mask]  # (N, H)
    logits = hidden @ plain.target.lm.output_layer.weight.T  # (N, V), by hand
    lm_loss = F.cross_entropy(logits, tgt[mask])
    z_loss = Z_WEIGHT * (torch.logsumexp(logits, -1) ** 2).mean()
    torch.testing.assert_close(out.metrics["loss_lm"], lm_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.metrics["loss_z"], z_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, lm_loss + z_loss, rtol=1e-5, atol=1e-6)
    out.loss.backward()  # the auxiliary gradient reaches the LM head
    expected = torch.autograd.grad(lm_loss + z_loss, plain.target.lm.output_layer.weight)[0]
    torch.testing.assert_close(with_aux.target.lm.output_layer.weight.grad, expected, rtol=1e-4, atol=1e-6)


def test_a_target_without_its_labels_in_a_dict_batch_is_named():
    model = build_model(dataclasses.replace(load_model_config(f"{REPO_ROOT}/models/bert/tiny_config.json"),
                                            dropout=0.0), V)
    src = torch.randint(0, V, (2, 8))
    with pytest.raises(ConfigError, match="no labels for target 'sp'"):
        model(src, {"mlm": src}, torch.ones_like(src), torch.ones_like(src, dtype=torch.bool))


# ------------------------------------------------------------------ processors accept targets by their labels
def test_processors_accept_targets_by_the_labels_they_score():
    bert = load_model_config(f"{REPO_ROOT}/models/bert/tiny_config.json")
    both = (LABELS_MASKED_TOKENS, LABELS_SENTENCE_PAIR)
    assert check_targets("bert", both, bert) == {LABELS_MASKED_TOKENS: "mlm", LABELS_SENTENCE_PAIR: "sp"}
    variant = dataclasses.replace(bert, target=(MLM_VARIANT, "sp"))
    assert check_targets("bert", both, variant) == {LABELS_MASKED_TOKENS: MLM_VARIANT, LABELS_SENTENCE_PAIR: "sp"}
    with_aux = tiny_llama_config(target=("lm", AUX_TARGET))  # a target without labels fits any processor
    assert check_targets("lm", (LABELS_NEXT_TOKENS,), with_aux) == {LABELS_NEXT_TOKENS: "lm"}
    assert check_targets("lm", (LABELS_NEXT_TOKENS,), None) == {}


def test_a_processor_names_the_targets_that_would_fit():
    with pytest.raises(ConfigError) as info:
        check_targets("mlm", (LABELS_MASKED_TOKENS,), tiny_llama_config())
    message = str(info.value)
    assert "data processor 'mlm' provides masked-token labels" in message
    assert "the model's \"target\" is ['lm']" in message
    assert f"among ['mlm', '{MLM_VARIANT}']" in message and "a dataset built for lm" in message
    with pytest.raises(ConfigError, match=r"provides next-token labels, for the target\(s\) lm, but"):
        check_targets("lm", (LABELS_NEXT_TOKENS,), load_model_config(f"{REPO_ROOT}/models/bert/tiny_config.json"))


# ------------------------------------------------------------------ one loss function for evaluation
def test_dataset_loss_scores_the_vocabulary_target_of_a_dict_batch():
    """BERT batches carry {"mlm": ids, "sp": labels}: the masked-token loss is the mlm head's cross-entropy."""
    config = dataclasses.replace(load_model_config(f"{REPO_ROOT}/models/bert/tiny_config.json"), dropout=0.0)
    torch.manual_seed(0)
    model = build_model(config, V).eval()
    src = torch.randint(5, V, (3, 9))
    seg = torch.ones_like(src)
    mask = torch.rand(3, 9) < 0.3
    mask[0, 0] = True

    class Batch:
        pass

    batch = Batch()
    batch.src, batch.seg, batch.loss_mask = src, seg, mask
    batch.tgt = {"mlm": torch.randint(5, V, (3, 9)), "sp": torch.tensor([0, 1, 1])}
    loss_sum, tokens = evaluate_dataset_loss(model, [batch])
    hidden = model.hidden_states(src, seg)
    expected = F.cross_entropy(model.target.mlm.logits(hidden[mask]), batch.tgt["mlm"][mask], reduction="sum")
    assert tokens == int(mask.sum())
    assert loss_sum == pytest.approx(expected.item(), rel=1e-5)


def test_dataset_loss_of_an_encoder_decoder_reads_the_decoder():
    t5 = load_model_config(f"{REPO_ROOT}/models/t5/small_config.json")
    config = dataclasses.replace(t5, layers_num=1, decoder_layers_num=1, emb_size=32, hidden_size=32,
                                 feedforward_size=64, heads_num=2, dropout=0.0)
    torch.manual_seed(0)
    model = build_model(config, V).eval()
    src, tgt_in, tgt = torch.randint(0, V, (2, 6)), torch.randint(0, V, (2, 4)), torch.randint(0, V, (2, 4))
    seg, tgt_seg = torch.ones_like(src), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])

    class Seq2Seq:
        def model_kwargs(self):
            return {"tgt_in": tgt_in, "tgt_seg": tgt_seg}

    batch = Seq2Seq()
    batch.src, batch.tgt, batch.seg, batch.loss_mask = src, tgt, seg, tgt_seg > 0
    loss_sum, tokens = evaluate_dataset_loss(model, [batch])
    mean = model(src, tgt, seg, tgt_seg > 0, tgt_in=tgt_in, tgt_seg=tgt_seg).loss  # the training loss
    assert tokens == 6
    assert loss_sum / tokens == pytest.approx(mean.item(), rel=1e-5)


def test_lm_and_mlm_declare_their_capabilities():
    assert LmTarget.labels == LABELS_NEXT_TOKENS and LmTarget.ties_to_word_embedding == ("output_layer.weight",)
    assert MlmTarget.labels == LABELS_MASKED_TOKENS and MlmTarget.ties_to_word_embedding == ("linear_2.weight",)
