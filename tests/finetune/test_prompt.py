"""run_classifier_prompt / run_classifier_prompt_infer: templates, the MLM head's keys and pretrained weights,
learning, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tencentpretrain.checkpoint import load_state_dict, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.finetune import prompt as cloze
from tencentpretrain.finetune.data import SpecialIds
from tencentpretrain.finetune.model import build_task_model
from tencentpretrain.models.model import build_model
from tencentpretrain.tokenizers import build_tokenizer

PROMPTS = {
    "sentiment": {"template": "[TEXT_A]，我觉得[ANS]", "answer_words": {"0": "差", "1": "好"}},
    "pair": {"template": "[TEXT_A][ANS][TEXT_B]", "answer_words": {"0": "差", "1": "好"}},
    "long_word": {"template": "[TEXT_A][ANS]", "answer_words": {"0": "不满意", "1": "好"}},
}


@pytest.fixture
def prompts_path(tmp_path) -> str:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(PROMPTS, ensure_ascii=False), encoding="utf-8")
    return str(path)


@pytest.fixture
def tokenizer(vocab_path):
    return build_tokenizer("bert", vocab_path=vocab_path)


def test_templates_are_filled_and_cut_as_the_original(tokenizer, prompts_path):
    specials = SpecialIds.of(tokenizer)
    ids = {c: tokenizer.piece_to_id(c) for c in "这个酒店，我觉得好差"}
    single = cloze.load_prompt(prompts_path, "sentiment", tokenizer)
    assert single.template_length == 5 and single.answer_order == sorted([ids["好"], ids["差"]])
    src, mask = cloze.encode_cloze(tokenizer, specials, single, "这个酒店", None, 64)
    assert src == [specials.cls, ids["这"], ids["个"], ids["酒"], ids["店"], ids["，"], ids["我"], ids["觉"], ids["得"],
                   specials.mask, specials.sep] and mask == 9
    # text_a alone is cut to seq_length - template_length - 2 = 1 token
    src, mask = cloze.encode_cloze(tokenizer, specials, single, "这个酒店", None, 8)
    assert src == [specials.cls, ids["这"], ids["，"], ids["我"], ids["觉"], ids["得"], specials.mask, specials.sep]
    assert mask == 6
    pair = cloze.load_prompt(prompts_path, "pair", tokenizer)
    # text_b is cut to seq_length - template_length(1) - len(text_a)(2) - 3 = 2 tokens
    src, mask = cloze.encode_cloze(tokenizer, specials, pair, "这个", "酒店这个", 8)
    assert src == [specials.cls, ids["这"], ids["个"], specials.sep, specials.mask, ids["酒"], ids["店"], specials.sep]
    assert mask == 4


def test_bad_prompts_are_refused_naming_the_file(tokenizer, prompts_path):
    with pytest.raises(ConfigError, match=r"prompts.json: the answer word '不满意' of label '0' .* is not one token"):
        cloze.load_prompt(prompts_path, "long_word", tokenizer)
    with pytest.raises(ConfigError, match=r"prompts.json: no prompt 'absent' \(--prompt_id\); the file has: long_word"):
        cloze.load_prompt(prompts_path, "absent", tokenizer)


def test_the_head_has_the_originals_keys_and_takes_the_pretrained_mlm_head(tmp_path, tokenizer, bert_config_path):
    config = load_model_config(bert_config_path)
    pretrained = build_model(config, tokenizer.vocab_size)
    save_checkpoint(pretrained, str(tmp_path / "bert.bin"))
    model = build_task_model(cloze.ClozeTest, config, tokenizer.vocab_size, str(tmp_path / "bert.bin"),
                             answer_ids=[5, 9])
    state, theirs = model.state_dict(), pretrained.state_dict()
    assert [k for k in state if k.startswith("target.")] == [
        "target.linear_1.weight", "target.linear_1.bias", "target.layer_norm.gamma", "target.layer_norm.beta",
        "target.linear_2.weight", "target.linear_2.bias"]
    for key in ("linear_1.weight", "layer_norm.gamma", "linear_2.bias"):
        assert torch.equal(state[f"target.{key}"], theirs[f"target.mlm.{key}"]), key
    assert model.target.linear_2.weight is model.embedding.word.embedding.weight  # tie_weights


def _write(path: Path, rows: list[str]) -> str:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def _train_args(files, vocab_path, config_path, prompts_path, out, *extra):
    return ["--vocab_path", vocab_path, "--config_path", config_path, "--train_path", files["train"],
            "--dev_path", files["dev"], "--test_path", files["test"], "--output_model_path", str(out),
            "--prompt_path", prompts_path, "--prompt_id", "sentiment", "--epochs_num", "4", "--batch_size", "16",
            "--learning_rate", "1e-3", "--report_steps", "5", *extra]


@pytest.mark.slow
def test_learns_to_fill_the_answer_word_and_predicts_what_it_scored(sentiment_files, vocab_path, bert_config_path,
                                                                    prompts_path, tokenizer, tmp_path, caplog):
    out = tmp_path / "prompt.bin"
    caplog.set_level("INFO")
    cloze.finetune_main(_train_args(sentiment_files, vocab_path, bert_config_path, prompts_path, out))
    scores = [float(r.getMessage().split()[2]) for r in caplog.records if r.getMessage().startswith("Acc.")]
    assert len(scores) == 5 and scores[-1] >= 0.9, scores
    assert "target.linear_2.weight" in load_state_dict(str(out))

    rows = Path(sentiment_files["test"]).read_text(encoding="utf-8").splitlines()
    nolabel = _write(tmp_path / "nolabel.tsv", [r.split("\t", 1)[1] for r in rows])
    prediction = tmp_path / "prediction.tsv"
    cloze.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path", nolabel,
                      "--load_model_path", str(out), "--prediction_path", str(prediction), "--prompt_path",
                      prompts_path, "--prompt_id", "sentiment", "--output_prob"])
    lines = prediction.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\tprob" and len(lines) == len(rows)
    # the predicted index is the answer's rank among the answer words by vocabulary id
    order = sorted(["0", "1"], key=lambda label: tokenizer.piece_to_id(PROMPTS["sentiment"]["answer_words"][label]))
    pred = [order[int(line.split("\t")[0])] for line in lines[1:]]
    gold = [r.split("\t")[0] for r in rows[1:]]
    assert sum(p == g for p, g in zip(pred, gold)) / len(gold) == pytest.approx(scores[-1], abs=1e-4)


def test_a_label_without_answer_word_names_the_file_and_line(sentiment_files, vocab_path, bert_config_path,
                                                             prompts_path, tmp_path):
    rows = Path(sentiment_files["train"]).read_text(encoding="utf-8").splitlines()
    rows[6] = "2\t" + rows[6].split("\t", 1)[1]
    train = _write(tmp_path / "train_bad.tsv", rows)
    out = tmp_path / "m.bin"
    with pytest.raises(DataError, match=r"train_bad.tsv, line 7: the label '2' has no answer word in the prompt"):
        cloze.finetune_main(_train_args({**sentiment_files, "train": train}, vocab_path, bert_config_path,
                                        prompts_path, out))
    assert not out.exists()


def test_inference_refuses_a_mask_cut_off_by_seq_length_and_writes_nothing(vocab_path, bert_config_path,
                                                                           prompts_path, tokenizer, tmp_path):
    config = load_model_config(bert_config_path)
    out = tmp_path / "m.bin"
    model = cloze.ClozeTest(config, tokenizer.vocab_size, answer_ids=[5, 9])
    save_checkpoint(model, str(out))
    test = _write(tmp_path / "pair.tsv", ["text_a\ttext_b", "好\t差", "这个酒店这个酒店\t好"])
    prediction = tmp_path / "prediction.tsv"
    with pytest.raises(DataError, match=r"pair.tsv, line 3: the template's \[ANS\] falls beyond --seq_length 6"):
        cloze.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path", test,
                          "--load_model_path", str(out), "--prediction_path", str(prediction), "--prompt_path",
                          prompts_path, "--prompt_id", "pair", "--seq_length", "6"])
    assert not list(tmp_path.glob("prediction.tsv*"))


def test_epochs_num_0_scores_the_test_set_with_the_pretrained_mlm_head(sentiment_files, vocab_path, bert_config_path,
                                                                       prompts_path, tokenizer, tmp_path, caplog):
    config = load_model_config(bert_config_path)
    torch.manual_seed(3)
    pretrained = build_model(config, tokenizer.vocab_size)
    save_checkpoint(pretrained, str(tmp_path / "bert.bin"))
    out = tmp_path / "never.bin"
    caplog.set_level("INFO")
    cloze.finetune_main(_train_args(sentiment_files, vocab_path, bert_config_path, prompts_path, out,
                                    "--epochs_num", "0", "--pretrained_model_path", str(tmp_path / "bert.bin")))
    [reported] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Acc.")]
    prompt = cloze.load_prompt(prompts_path, "sentiment", tokenizer)
    model = build_task_model(cloze.ClozeTest, config, tokenizer.vocab_size, str(tmp_path / "bert.bin"),
                             answer_ids=prompt.answer_order).eval()
    examples = cloze.read_prompt_examples(sentiment_files["test"], tokenizer, 128, prompt)
    with torch.no_grad():
        logits = model(cloze.collate_for(tokenizer)(examples)).logits
    correct = sum(int(p) == e["label"] for p, e in zip(logits.argmax(-1), examples))
    assert reported.split()[3] == f"({correct}/{len(examples)})"
    assert not out.exists()  # nothing trained, nothing saved
