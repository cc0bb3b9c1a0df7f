"""Fine-tuned BERT task heads (BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering)
<-> the checkpoints of the fine-tuning models (the original's keys), through the original's script names:
bit-exact round trips, transformers loads the export and gives the same logits, bare state dicts as the original
read them, and every kind of wrong input refused without leaving an output behind."""

from __future__ import annotations

import json
import os

import pytest
import torch

from scripts import convert_bert_extractive_qa_from_huggingface_to_tencentpretrain as qa_hf_to_tp
from scripts import convert_bert_extractive_qa_from_tencentpretrain_to_huggingface as qa_tp_to_hf
from scripts import convert_bert_text_classification_from_huggingface_to_tencentpretrain as cls_hf_to_tp
from scripts import convert_bert_text_classification_from_tencentpretrain_to_huggingface as cls_tp_to_hf
from scripts import convert_bert_token_classification_from_huggingface_to_tencentpretrain as ner_hf_to_tp
from scripts import convert_bert_token_classification_from_tencentpretrain_to_huggingface as ner_tp_to_hf
from scripts import convert_from_huggingface_to_tencentpretrain as any_hf_to_tp
from tencentpretrain.checkpoint import load_state_dict, save_file
from tencentpretrain.cli import run as run_entry_point
from tencentpretrain.config import load_model_config, save_model_config
from tencentpretrain.convert.hf import HfExportOptions, convert_tencentpretrain_to_hf
from tencentpretrain.convert.loading import load_model
from tencentpretrain.errors import CheckpointError, ConfigError

transformers = pytest.importorskip("transformers")

VOCAB, LAYERS, HIDDEN = 97, 2, 32
ENCODER_KEYS = 16  # per layer: Q, K, V, attention output, 2 feed-forward linears (weight + bias), 2 LayerNorms


def _encoder_keys(layers: int = LAYERS) -> set[str]:
    embedding = {"embedding.word.embedding.weight", "embedding.pos.embedding.weight", "embedding.seg.embedding.weight",
                 "embedding.layer_norm.gamma", "embedding.layer_norm.beta"}
    per_layer = {f"self_attn.linear_layers.{j}.{p}" for j in range(3) for p in ("weight", "bias")}
    per_layer |= {f"{m}.{p}" for m in ("self_attn.final_linear", "feed_forward.linear_1", "feed_forward.linear_2")
                  for p in ("weight", "bias")}
    per_layer |= {f"{n}.{p}" for n in ("layer_norm_1", "layer_norm_2") for p in ("gamma", "beta")}
    assert len(per_layer) == ENCODER_KEYS
    return embedding | {f"encoder.transformer.{i}.{k}" for i in range(layers) for k in per_layer}


# task -> (HF class, scripts, the original's head keys -> shapes for 5 labels)
TASKS = {
    "text_classification": ("BertForSequenceClassification", cls_hf_to_tp, cls_tp_to_hf,
                            {"output_layer_1.weight": (HIDDEN, HIDDEN), "output_layer_1.bias": (HIDDEN,),
                             "output_layer_2.weight": (5, HIDDEN), "output_layer_2.bias": (5,)}),
    "token_classification": ("BertForTokenClassification", ner_hf_to_tp, ner_tp_to_hf,
                             {"output_layer.weight": (5, HIDDEN), "output_layer.bias": (5,)}),
    "extractive_qa": ("BertForQuestionAnswering", qa_hf_to_tp, qa_tp_to_hf,
                      {"output_layer.weight": (2, HIDDEN), "output_layer.bias": (2,)}),
}


def _hf_head(task: str, path: str | None = None, *, seed: int = 0, layers: int = LAYERS):
    """A tiny random fine-tuned HF BERT of ``task`` (5 labels; QA: start/end), biases and norms perturbed."""
    architecture = TASKS[task][0]
    labels = 2 if task == "extractive_qa" else 5
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=layers,
                                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=32,
                                     num_labels=labels, architectures=[architecture])
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    if path is not None:
        model.save_pretrained(path, max_shard_size="40KB")
    return model


def _outputs(task: str, model, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=ids, token_type_ids=types)
    if task == "extractive_qa":
        return torch.stack([out.start_logits, out.end_logits], dim=-1)
    return out.logits


def _auto_class(task: str):
    return {"text_classification": transformers.AutoModelForSequenceClassification,
            "token_classification": transformers.AutoModelForTokenClassification,
            "extractive_qa": transformers.AutoModelForQuestionAnswering}[task]


@pytest.mark.parametrize("task", list(TASKS))
def test_hf_to_ours_to_hf_is_bit_exact_and_transformers_gives_the_same_logits(tmp_path, task):
    architecture, hf_to_tp, tp_to_hf, head_shapes = TASKS[task]
    hf = _hf_head(task, str(tmp_path / "hf"))
    assert len([f for f in os.listdir(tmp_path / "hf") if f.endswith(".safetensors")]) > 1  # really sharded
    ours = str(tmp_path / "finetuned.bin")
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path", ours,
                          "--layers_num", str(LAYERS)]) == 0

    state = load_state_dict(ours)
    assert set(state) == _encoder_keys() | set(head_shapes)  # exactly the fine-tuning model's keys
    assert {k: tuple(state[k].shape) for k in head_shapes} == head_shapes
    assert torch.equal(state["embedding.seg.embedding.weight"][0], torch.zeros(HIDDEN))  # segment 0 = padding
    config = load_model_config(str(tmp_path / "finetuned_config.json"))
    assert config.layernorm == "standard" and config.layers_num == LAYERS
    assert config.labels_num == (None if task == "extractive_qa" else 5)

    back = str(tmp_path / "back")
    assert tp_to_hf.main(["--input_model_path", ours, "--output_model_path", back, "--layers_num", str(LAYERS)]) == 0
    with open(os.path.join(back, "config.json"), encoding="utf-8") as f:
        written = json.load(f)
    assert written["architectures"] == [architecture]
    original = hf.state_dict()
    exported = load_state_dict(back)
    assert set(exported) == set(original)
    for key, tensor in original.items():
        assert torch.equal(exported[key], tensor), key

    reloaded = _auto_class(task).from_pretrained(back).eval()
    assert type(reloaded).__name__ == architecture and reloaded.config.num_labels == hf.config.num_labels
    ids, types = torch.randint(1, VOCAB, (3, 13)), torch.randint(0, 2, (3, 13))
    torch.testing.assert_close(_outputs(task, reloaded, ids, types), _outputs(task, hf, ids, types), rtol=0, atol=0)


@pytest.mark.parametrize("task", list(TASKS))
def test_a_bare_state_dict_converts_as_the_original_read_it(tmp_path, task, caplog):
    """The original scripts read a bare pytorch_model.bin; with no config.json beside it the keys are checked
    against --layers_num layers and no JSON config is written."""
    hf = _hf_head(task, str(tmp_path / "hf"))
    os.makedirs(tmp_path / "bare")
    torch.save(hf.state_dict(), tmp_path / "bare" / "pytorch_model.bin")
    hf_to_tp = TASKS[task][1]
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path",
                          str(tmp_path / "from_dir.bin")]) == 0
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "bare" / "pytorch_model.bin"),
                          "--output_model_path", str(tmp_path / "from_bare.bin"), "--layers_num", str(LAYERS)]) == 0
    from_dir = load_state_dict(str(tmp_path / "from_dir.bin"))
    from_bare = load_state_dict(str(tmp_path / "from_bare.bin"))
    assert set(from_bare) == set(from_dir)
    for key, tensor in from_dir.items():
        assert torch.equal(from_bare[key], tensor), key
    assert not os.path.exists(tmp_path / "from_bare_config.json")
    assert "no TencentPretrain config was written" in caplog.text
    # A TencentPretrain JSON config beside it is not an HF config.json: still a bare state dict.
    ours_config = load_model_config(str(tmp_path / "from_dir_config.json"))
    save_model_config(ours_config, str(tmp_path / "bare" / "config.json"))
    assert hf_to_tp.main(["--input_model_path", str(tmp_path / "bare" / "pytorch_model.bin"),
                          "--output_model_path", str(tmp_path / "again.bin")]) == 0
    assert torch.equal(load_state_dict(str(tmp_path / "again.bin"))["embedding.word.embedding.weight"],
                       from_dir["embedding.word.embedding.weight"])
    with pytest.raises(ConfigError, match="no HF config.json beside it, so there is no config to write"):
        hf_to_tp.main(["--input_model_path", str(tmp_path / "bare" / "pytorch_model.bin"), "--output_model_path",
                       str(tmp_path / "x.bin"), "--output_config_path", str(tmp_path / "x.json")])
    assert not os.path.exists(tmp_path / "x.bin")
    # A weight file inside an HF directory is read with the directory's config.json.
    weights = sorted(f for f in os.listdir(tmp_path / "hf") if f.endswith(".safetensors"))
    with pytest.raises(CheckpointError, match="not produced"):  # one shard of several: incomplete
        hf_to_tp.main(["--input_model_path", str(tmp_path / "hf" / weights[0]), "--output_model_path",
                       str(tmp_path / "shard.bin")])
    assert not os.path.exists(tmp_path / "shard.bin")


@pytest.fixture
def script_error(capsys):
    """Run a script's main as its ``__main__`` does; return (exit code, stderr)."""

    def run(main, argv):
        with pytest.raises(SystemExit) as exit_info:
            run_entry_point(lambda: main(argv))
        return exit_info.value.code, capsys.readouterr().err

    return run


def test_a_bare_state_dict_missing_a_layer_or_with_foreign_keys_is_refused(tmp_path, script_error):
    hf = _hf_head("text_classification")
    state = hf.state_dict()
    torch.save(state, tmp_path / "two_layers.bin")
    code, err = script_error(cls_hf_to_tp.main, ["--input_model_path", str(tmp_path / "two_layers.bin"),
                                                 "--output_model_path", str(tmp_path / "out.bin"), "--layers_num", "3"])
    assert code == 2 and "not produced (16): encoder.transformer.2." in err  # the original's default would be 12

    torch.save({k: v for k, v in state.items() if ".layer.0.attention.self.key." not in k}, tmp_path / "gap.bin")
    code, err = script_error(cls_hf_to_tp.main, ["--input_model_path", str(tmp_path / "gap.bin"),
                                                 "--output_model_path", str(tmp_path / "out.bin")])
    assert code == 2 and "not produced (2): encoder.transformer.0.self_attn.linear_layers.1.bias" in err

    torch.save({**state, "cls.predictions.bias": torch.zeros(VOCAB)}, tmp_path / "mlm.bin")
    code, err = script_error(cls_hf_to_tp.main, ["--input_model_path", str(tmp_path / "mlm.bin"),
                                                 "--output_model_path", str(tmp_path / "out.bin")])
    assert code == 2 and "1 HuggingFace BERT BertForSequenceClassification keys with no TencentPretrain " \
                         "equivalent: cls.predictions.bias" in err
    # A token-classification state dict given to the text-classification converter: no pooler.
    torch.save(_hf_head("token_classification").state_dict(), tmp_path / "ner.bin")
    code, err = script_error(cls_hf_to_tp.main, ["--input_model_path", str(tmp_path / "ner.bin"),
                                                 "--output_model_path", str(tmp_path / "out.bin")])
    assert code == 2 and "not produced (2): output_layer_1.bias, output_layer_1.weight" in err
    assert not os.path.exists(tmp_path / "out.bin")


def test_the_wrong_head_or_layer_count_is_refused_before_anything_is_written(tmp_path, script_error):
    _hf_head("token_classification", str(tmp_path / "ner"))
    code, err = script_error(cls_hf_to_tp.main, ["--input_model_path", str(tmp_path / "ner"),
                                                 "--output_model_path", str(tmp_path / "out.bin")])
    assert code == 2 and "holds an HF BertForTokenClassification (config.json architectures), not " \
                         "BertForSequenceClassification" in err
    code, err = script_error(ner_hf_to_tp.main, ["--input_model_path", str(tmp_path / "ner"), "--output_model_path",
                                                 str(tmp_path / "out.bin"), "--layers_num", "12"])
    assert code == 2 and "--layers_num 12, but" in err and "has 2 layers" in err
    assert not os.path.exists(tmp_path / "out.bin") and not os.path.exists(tmp_path / "out_config.json")


def test_the_generic_converter_reads_the_head_from_config_json_and_load_model_refuses_it(tmp_path):
    _hf_head("extractive_qa", str(tmp_path / "qa"))
    assert any_hf_to_tp.main(["--input_model_path", str(tmp_path / "qa"), "--output_model_path",
                              str(tmp_path / "qa.bin")]) == 0
    assert "output_layer.weight" in load_state_dict(str(tmp_path / "qa.bin"))
    with pytest.raises(ConfigError, match="holds a fine-tuned BertForQuestionAnswering, not a pretrained model"):
        load_model(None, str(tmp_path / "qa"))


def test_an_export_needs_the_head_and_a_config_hf_bert_computes(tmp_path, script_error):
    hf = _hf_head("text_classification", str(tmp_path / "hf"))
    ours = str(tmp_path / "cls.bin")
    cls_hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path", ours])
    config = load_model_config(str(tmp_path / "cls_config.json"))
    # The label count comes from the checkpoint (the fine-tuning scripts count labels in the training data).
    state = load_state_dict(ours)
    state["output_layer_2.weight"], state["output_layer_2.bias"] = torch.randn(7, HIDDEN), torch.randn(7)
    save_file(state, str(tmp_path / "seven.bin"))
    convert_tencentpretrain_to_hf(str(tmp_path / "seven.bin"), str(tmp_path / "seven"), config,
                                  HfExportOptions(family="bert", head="BertForSequenceClassification"))
    assert transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "seven").config.num_labels == 7
    # A pretrained model is not a fine-tuned one.
    del state["output_layer_2.weight"], state["output_layer_2.bias"]
    save_file(state, str(tmp_path / "headless.bin"))
    with pytest.raises(CheckpointError, match="no output_layer_2.weight: not a fine-tuned model"):
        convert_tencentpretrain_to_hf(str(tmp_path / "headless.bin"), str(tmp_path / "x"), config,
                                      HfExportOptions(family="bert", head="BertForSequenceClassification"))
    # The original's LayerNorm (models/bert/*_config.json) is not HF BERT's: refused, as for the MLM export.
    save_model_config(config.replace(layernorm="normal"), str(tmp_path / "normal.json"))
    code, err = script_error(cls_tp_to_hf.main, ["--input_model_path", ours, "--config_path",
                                                 str(tmp_path / "normal.json"), "--output_model_path",
                                                 str(tmp_path / "x")])
    assert code == 2 and "layernorm='normal'" in err
    # HF's pooler reads the [CLS] position only: a classifier fine-tuned with --pooling mean is not exportable.
    with pytest.raises(ConfigError, match="pools the 'first' position, the config pools 'mean'"):
        convert_tencentpretrain_to_hf(ours, str(tmp_path / "x"), config.replace(pooling="mean"),
                                      HfExportOptions(family="bert", head="BertForSequenceClassification"))
    code, err = script_error(cls_tp_to_hf.main, ["--input_model_path", ours, "--output_model_path",
                                                 str(tmp_path / "x"), "--layers_num", "12"])
    assert code == 2 and "--layers_num 12, but the config has 2 layers" in err
    assert not os.path.exists(tmp_path / "x")
    del hf


# ---------------------------------------------------------------------------------------------- our fine-tuning models
def test_hf_sequence_classifier_and_our_classifier_give_the_same_logits(tmp_path):
    """The converted checkpoint in finetune/run_classifier.py's model computes what BertForSequenceClassification
    does, padded batches included (HF's attention_mask = our segment 0); so does the HF directory itself given as
    the pretrained model."""
    from tencentpretrain.finetune.classifier import Classifier
    from tencentpretrain.finetune.model import build_task_model, load_finetuned_weights

    hf = _hf_head("text_classification", str(tmp_path / "hf"))
    cls_hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path", str(tmp_path / "cls.bin")])
    config = load_model_config(str(tmp_path / "cls_config.json"))
    ids, types = torch.randint(1, VOCAB, (3, 13)), torch.randint(0, 2, (3, 13))
    mask = torch.ones_like(ids)
    mask[1, 9:], mask[2, 4:] = 0, 0  # two padded inputs
    with torch.no_grad():
        theirs = hf(input_ids=ids, token_type_ids=types, attention_mask=mask).logits  # (3, 5)
    batch = {"src": ids * mask, "seg": (types + 1) * mask}  # TencentPretrain: segments 1, 2; 0 = padding

    ours = Classifier(config, VOCAB, labels_num=config.labels_num).eval()
    load_finetuned_weights(ours, str(tmp_path / "cls.bin"))
    from_hf_dir = build_task_model(Classifier, config, VOCAB, str(tmp_path / "hf"), labels_num=5).eval()
    for model in (ours, from_hf_dir):
        with torch.no_grad():
            logits = model(batch).logits
        assert logits.shape == theirs.shape
        assert (logits - theirs).abs().max() < 1e-4  # fp32; the two attention kernels sum in other orders
        assert torch.equal(logits.argmax(-1), theirs.argmax(-1))


def test_a_crf_tagger_has_no_hf_token_classification_equivalent(tmp_path):
    """run_ner.py --crf_target adds a CRF (crf.* keys) that BertForTokenClassification lacks: refused, named."""
    _hf_head("token_classification", str(tmp_path / "hf"))
    ner_hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path", str(tmp_path / "ner.bin")])
    state = load_state_dict(str(tmp_path / "ner.bin"))
    state.update({"crf.start_transitions": torch.zeros(5), "crf.end_transitions": torch.zeros(5),
                  "crf.transitions": torch.zeros(5, 5)})
    save_file(state, str(tmp_path / "crf.bin"))
    with pytest.raises(CheckpointError, match=r"not expected \(3\): crf.end_transitions, crf.start_transitions"):
        convert_tencentpretrain_to_hf(str(tmp_path / "crf.bin"), str(tmp_path / "x"),
                                      load_model_config(str(tmp_path / "ner_config.json")),
                                      HfExportOptions(family="bert", head="BertForTokenClassification"))
    assert not os.path.exists(tmp_path / "x")


def _our_task_model(task: str, config, path: str):
    """Our fine-tuning model of ``task`` (run_ner.py / run_cmrc.py), loaded strictly from ``path``; skipped until
    that task's module exists."""
    from tencentpretrain.finetune.model import load_finetuned_weights

    if task == "token_classification":
        model = pytest.importorskip("tencentpretrain.finetune.ner").NerTagger(config, VOCAB, labels_num=5)
    else:
        model = pytest.importorskip("tencentpretrain.finetune.cmrc").MachineReadingComprehension(config, VOCAB)
    load_finetuned_weights(model, path)
    return model.eval()


@pytest.mark.parametrize("task", ["token_classification", "extractive_qa"])
def test_hf_token_heads_and_our_tagger_and_reader_give_the_same_logits(tmp_path, task):
    """BertForTokenClassification = run_ner.py's NerTagger, BertForQuestionAnswering = run_cmrc.py's model
    ((B, T, 2): start, end), on the real tokens of padded batches."""
    hf = _hf_head(task, str(tmp_path / "hf"))
    hf_to_tp = TASKS[task][1]
    hf_to_tp.main(["--input_model_path", str(tmp_path / "hf"), "--output_model_path", str(tmp_path / "ours.bin")])
    model = _our_task_model(task, load_model_config(str(tmp_path / "ours_config.json")), str(tmp_path / "ours.bin"))
    ids, types = torch.randint(1, VOCAB, (3, 13)), torch.randint(0, 2, (3, 13))
    mask = torch.ones_like(ids)
    mask[1, 9:], mask[2, 4:] = 0, 0
    with torch.no_grad():
        out = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
        theirs = out.logits if task == "token_classification" else torch.stack([out.start_logits, out.end_logits], -1)
        ours = model({"src": ids * mask, "seg": (types + 1) * mask}).logits
    assert ours.shape == theirs.shape
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max() < 1e-4
