"""run_text2text / run_text2text_infer: a tiny T5 learns to reverse strings; the original's keys, exact match and
prediction file; dynamic padding; bad input named by file and line; no partial output."""

from __future__ import annotations

import json
import random
import runpy
from pathlib import Path

import pytest
import torch

from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import CheckpointError, ConfigError, DataError
from tencentpretrain.finetune import text2text
from tencentpretrain.finetune.model import build_task_model, load_finetuned_weights
from tencentpretrain.finetune.text2text import Text2text, collate_for, read_text2text
from tencentpretrain.tokenizers import build_tokenizer
from tests.finetune.conftest import FILLER
from tests.helpers import REPO_ROOT

ALPHABET = FILLER[:6]
TINY_T5 = {"emb_size": 32, "hidden_size": 32, "feedforward_size": 64, "heads_num": 2, "layers_num": 2,
           "decoder_layers_num": 2, "dropout": 0.0, "relative_attention_buckets_num": 8}


@pytest.fixture(scope="module")
def t5_config_path(tmp_path_factory) -> str:
    config = json.loads((Path(REPO_ROOT) / "models/t5/small_config.json").read_text(encoding="utf-8"))
    path = tmp_path_factory.mktemp("t5") / "tiny_t5.json"
    path.write_text(json.dumps({**config, **TINY_T5}), encoding="utf-8")
    return str(path)


def write_reverse_tsv(path: Path, n: int, seed: int, *, with_label: bool = True, pair: bool = False) -> Path:
    """``text_a<TAB>label``: a random string of 2-3 characters (of 6) and the same string reversed."""
    rng = random.Random(seed)
    lines = ["\t".join(["text_a"] + (["text_b"] if pair else []) + (["label"] if with_label else []))]
    for _ in range(n):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(2, 3)))
        lines.append("\t".join([text] + (["".join(rng.choice(ALPHABET) for _ in range(2))] if pair else [])
                               + ([text[::-1]] if with_label else [])))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _accuracy(caplog) -> list[float]:
    return [float(r.getMessage().split()[2]) for r in caplog.records if r.getMessage().startswith("Acc.")]


@pytest.mark.slow
def test_learns_to_reverse_and_infer_writes_what_was_scored(tmp_path, vocab_path, t5_config_path, caplog):
    files = {name: str(write_reverse_tsv(tmp_path / f"{name}.tsv", n, seed))
             for name, n, seed in (("train", 600, 1), ("dev", 100, 2), ("test", 100, 3))}
    out = tmp_path / "text2text.bin"
    caplog.set_level("INFO")
    text2text.finetune_main(["--vocab_path", vocab_path, "--config_path", t5_config_path, "--train_path",
                             files["train"], "--dev_path", files["dev"], "--test_path", files["test"],
                             "--output_model_path", str(out), "--epochs_num", "7", "--batch_size", "16",
                             "--learning_rate", "2e-3", "--bias_correction", "--seq_length", "8",
                             "--tgt_seq_length", "6", "--report_steps", "1000"])
    # 12-16 of the 100 dev/test strings are not in the training set.
    # (without --bias_correction the original's first Adam steps are ~3x larger, and this tiny T5 from scratch
    # settles on predicting the letters' frequencies)
    scores = _accuracy(caplog)
    assert len(scores) == 8  # seven dev evaluations, then the test set with the best model
    assert scores[0] < 0.5 and scores[-1] >= 0.9, scores
    keys = set(load_state_dict(str(out)))
    assert {k.split(".")[0] for k in keys} == {"embedding", "encoder", "tgt_embedding", "decoder", "target"}
    assert "target.lm.output_layer.weight" in keys and "tgt_embedding.word.embedding.weight" in keys

    nolabel = tmp_path / "nolabel.tsv"
    rows = Path(files["test"]).read_text(encoding="utf-8").splitlines()
    nolabel.write_text("\n".join(r.split("\t")[0] for r in rows) + "\n", encoding="utf-8")
    prediction = tmp_path / "prediction.tsv"
    text2text.infer_main(["--vocab_path", vocab_path, "--config_path", t5_config_path, "--test_path", str(nolabel),
                          "--load_model_path", str(out), "--prediction_path", str(prediction), "--seq_length", "8",
                          "--tgt_seq_length", "6", "--batch_size", "7"])
    lines = prediction.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label" and len(lines) == len(rows)
    gold = [r.split("\t")[1] for r in rows[1:]]
    correct = sum(p == g for p, g in zip(lines[1:], gold))
    assert correct / len(gold) == pytest.approx(scores[-1], abs=1e-4)  # infer agrees with the test report


def test_examples_follow_the_original_layout(tmp_path, vocab_path):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    path = tmp_path / "pair.tsv"
    path.write_text("text_a\ttext_b\tlabel\n这个\t酒店\t服务很好\n", encoding="utf-8")
    (example,) = read_text2text(str(path), tokenizer, 16, 4)
    ids = {p: tokenizer.piece_to_id(p) for p in ("[CLS]", "[SEP]", "[PAD]")}
    piece = tokenizer.piece_to_id
    assert example["src"][0] == ids["[CLS]"] and example["src"][1:3] == [piece("这"), piece("个")]
    assert example["src"][-1] == ids["[SEP]"] and example["seg"] == [1] * len(example["src"])
    # [CLS] label [SEP] cut to --tgt_seq_length 4; the target is the input shifted left, [PAD] last
    assert example["tgt_in"] == [ids["[CLS]"], piece("服"), piece("务"), piece("很")]
    assert example["tgt_out"] == [piece("服"), piece("务"), piece("很"), ids["[PAD]"]]
    assert example["tgt_seg"] == [1, 1, 1, 1]
    assert example["gold"] == "服务"  # the original compares the first tgt_seq_length - 2 pieces


def test_padding_to_the_batch_equals_padding_further(tmp_path, vocab_path, t5_config_path):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    examples = read_text2text(str(write_reverse_tsv(tmp_path / "a.tsv", 6, 5)), tokenizer, 16, 10)
    torch.manual_seed(0)
    model = Text2text(load_model_config(t5_config_path), tokenizer.vocab_size).eval()
    model.init_weights()
    tight = collate_for(tokenizer)(examples)
    pad = tokenizer.piece_to_id("[PAD]")
    wide = {k: torch.nn.functional.pad(v, (0, 5), value=pad if k in ("src", "tgt_in", "tgt_out") else 0)
            for k, v in tight.items()}
    with torch.no_grad():
        narrow_out, wide_out = model(tight), model(wide)
    width = tight["tgt_in"].shape[1]
    torch.testing.assert_close(narrow_out.logits, wide_out.logits[:, :width], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(narrow_out.loss, wide_out.loss, atol=1e-6, rtol=1e-5)


def test_an_encoder_only_config_is_refused(vocab_path, bert_config_path):
    with pytest.raises(ConfigError, match="encoder-decoder"):
        Text2text(load_model_config(bert_config_path), 100)


def test_a_tsv_without_header_is_refused_with_file_and_line(tmp_path, vocab_path, t5_config_path):
    train = write_reverse_tsv(tmp_path / "train.tsv", 20, 1)
    train.write_text("\n".join(train.read_text(encoding="utf-8").splitlines()[1:]) + "\n", encoding="utf-8")
    out = tmp_path / "model.bin"
    with pytest.raises(DataError, match=rf"{train}, line 1: the header .* lacks the column"):
        text2text.finetune_main(["--vocab_path", vocab_path, "--config_path", t5_config_path, "--train_path",
                                 str(train), "--dev_path", str(train), "--output_model_path", str(out)])
    assert not out.exists()


def test_a_line_without_label_is_named_and_infer_leaves_no_partial_file(tmp_path, vocab_path, t5_config_path):
    train = tmp_path / "train.tsv"
    train.write_text("text_a\tlabel\n这个\t个这\n酒店\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{train}, line 3: no 'label' field"):
        read_text2text(str(train), build_tokenizer("bert", vocab_path=vocab_path), 16, 8)

    model = tmp_path / "model.bin"
    torch.manual_seed(0)
    untrained = Text2text(load_model_config(t5_config_path), build_tokenizer("bert", vocab_path=vocab_path).vocab_size)
    untrained.init_weights()
    torch.save(untrained.state_dict(), model)
    prediction = tmp_path / "prediction.tsv"
    prediction.write_text("an earlier prediction\n", encoding="utf-8")
    args = ["--vocab_path", vocab_path, "--config_path", t5_config_path, "--load_model_path", str(model),
            "--prediction_path", str(prediction), "--tgt_seq_length", "4"]
    headless = tmp_path / "headless.tsv"
    headless.write_text("这个\n酒店\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{headless}, line 1: the header"):
        text2text.infer_main([*args, "--test_path", str(headless)])
    assert prediction.read_text(encoding="utf-8") == "an earlier prediction\n"  # untouched
    good = write_reverse_tsv(tmp_path / "good.tsv", 3, 4, with_label=False)
    text2text.infer_main([*args, "--test_path", str(good)])
    assert prediction.read_text(encoding="utf-8").splitlines()[0] == "label"
    assert len(prediction.read_text(encoding="utf-8").splitlines()) == 4


def test_the_originals_layer_copies_of_the_relative_bias_are_what_loads(tmp_path, vocab_path, t5_config_path):
    """The original (since Nov 2023) computes with one relative position bias shared by its encoder layers and
    saved under each of them; its ``encoder.relative_pos_emb`` is unused. Both loaders take the layers' copy."""
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    config = load_model_config(t5_config_path)
    torch.manual_seed(0)
    model = Text2text(config, tokenizer.vocab_size).eval()
    model.init_weights()
    key = "encoder.relative_pos_emb.relative_attention_bias.weight"
    shared = torch.randn_like(model.state_dict()[key])
    original = {**model.state_dict(), key: torch.randn_like(shared)}  # the unused one
    original.update({f"encoder.transformer.{i}.relative_pos_emb.relative_attention_bias.weight": shared
                     for i in range(config.layers_num)})
    torch.save(original, tmp_path / "original.bin")
    with torch.no_grad():
        model.encoder.relative_pos_emb.relative_attention_bias.weight.copy_(shared)
    batch = collate_for(tokenizer)(read_text2text(str(write_reverse_tsv(tmp_path / "a.tsv", 4, 1)), tokenizer, 8, 6))

    loaded = Text2text(config, tokenizer.vocab_size).eval()
    load_finetuned_weights(loaded, str(tmp_path / "original.bin"))
    pretrained = build_task_model(Text2text, config, tokenizer.vocab_size, str(tmp_path / "original.bin")).eval()
    with torch.no_grad():
        expected = model(batch).logits
        torch.testing.assert_close(loaded(batch).logits, expected)
        torch.testing.assert_close(pretrained(batch).logits, expected)

    original["encoder.transformer.1.relative_pos_emb.relative_attention_bias.weight"] = torch.zeros_like(shared)
    torch.save(original, tmp_path / "inconsistent.bin")
    with pytest.raises(CheckpointError, match="relative position biases differ"):
        load_finetuned_weights(Text2text(config, tokenizer.vocab_size), str(tmp_path / "inconsistent.bin"))


@pytest.mark.slow
def test_an_hf_t5_is_the_pretrained_model_as_a_directory_or_converted(tmp_path, vocab_path):
    transformers = pytest.importorskip("transformers")
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    hf_config = transformers.T5Config(vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                      num_heads=4, feed_forward_proj="relu", relative_attention_num_buckets=8,
                                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(3)
    hf = transformers.T5ForConditionalGeneration(hf_config).eval()
    hf.save_pretrained(tmp_path / "hf_t5")
    converted = tmp_path / "t5.bin"
    runpy.run_path(f"{REPO_ROOT}/scripts/convert_t5_from_huggingface_to_tencentpretrain.py", run_name="not_main")[
        "main"](["--input_model_path", str(tmp_path / "hf_t5"), "--output_model_path", str(converted)])
    config_path = str(tmp_path / "t5_config.json")
    batch = collate_for(tokenizer)(read_text2text(str(write_reverse_tsv(tmp_path / "a.tsv", 5, 2)), tokenizer, 8, 6))
    with torch.no_grad():
        expected = hf(input_ids=batch["src"], attention_mask=batch["seg"], decoder_input_ids=batch["tgt_in"]).logits
    real = batch["tgt_seg"] > 0
    for pretrained in (str(tmp_path / "hf_t5"), str(converted)):
        model = build_task_model(Text2text, load_model_config(config_path), tokenizer.vocab_size, pretrained).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(batch).logits[real], expected[real], atol=3e-5, rtol=1e-4)

    files = {name: str(write_reverse_tsv(tmp_path / f"{name}.tsv", 16, seed)) for name, seed in (("train", 1),
                                                                                                 ("dev", 2))}
    out = tmp_path / "finetuned.bin"
    text2text.finetune_main(["--vocab_path", vocab_path, "--config_path", config_path, "--pretrained_model_path",
                             str(tmp_path / "hf_t5"), "--train_path", files["train"], "--dev_path", files["dev"],
                             "--output_model_path", str(out), "--epochs_num", "1", "--batch_size", "8"])
    assert set(load_state_dict(str(out))) == set(model.state_dict())
