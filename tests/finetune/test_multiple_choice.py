"""run_c3 / run_chid and their infer scripts: the original's inputs, the shared MultipleChoice head, learning to
high accuracy, infer agreeing with the report, the ChID assignment, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from tencentpretrain.checkpoint import load_state_dict, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.finetune import multiple_choice as mc
from tencentpretrain.finetune.data import SpecialIds
from tencentpretrain.finetune.multiple_choice import (
    MultipleChoice,
    assign_candidates,
    blank_contexts,
    read_c3,
    read_chid,
    tokens_around,
)
from tencentpretrain.tokenizers import build_tokenizer
from tests.finetune.conftest import FILLER, NEGATIVE, POSITIVE, sentiment_sentence


def _accuracy(caplog) -> list[float]:
    return [float(r.getMessage().split()[2]) for r in caplog.records if r.getMessage().startswith("Acc.")]


def _word(rng: random.Random, label: int, length: int = 2) -> str:
    return "".join(rng.choice(POSITIVE if label else NEGATIVE) for _ in range(length))


# ---------------------------------------------------------------------- C3
def write_c3(path: Path, n: int, seed: int, *, with_answer: bool = True) -> Path:
    """The answer is the one positive word among 2-4 choices (the others are negative)."""
    rng = random.Random(seed)
    documents = []
    for i in range(n):
        label = 1
        choices = [_word(rng, 1 - label) for _ in range(rng.randint(1, 3))]
        answer = _word(rng, label)
        choices.insert(rng.randrange(len(choices) + 1), answer)
        question = {"question": "我们觉得？", "choice": choices, "id": i}
        if with_answer:
            question["answer"] = answer
        documents.append([[sentiment_sentence(rng, label), "".join(rng.choice(FILLER) for _ in range(5))],
                          [question], f"doc-{i}"])
    path.write_text(json.dumps(documents, ensure_ascii=False), encoding="utf-8")
    return path


def test_c3_inputs_are_choice_question_document_with_no_answer_filling(vocab_path, tmp_path):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    ids = {c: tokenizer.piece_to_id(c) for c in ["[CLS]", "[SEP]", "[UNK]"] + list("好差我们这个酒店")}
    path = tmp_path / "c3.json"
    path.write_text(json.dumps([[["这个", "酒店"], [{"question": "我们", "choice": ["差", "好", "好"],
                                                    "answer": "好"}], "d0"]], ensure_ascii=False), encoding="utf-8")
    [example] = read_c3(str(path), tokenizer, 64, 4)
    assert example["label"] == 2  # the last equal choice, as the original
    question_doc = [ids["我"], ids["们"], ids["[SEP]"], ids["这"], ids["个"], ids["酒"], ids["店"],
                    ids["[SEP]"]]  # sentences joined by a newline, which BERT's tokenizer drops as space
    assert example["src"][0] == [ids["[CLS]"], ids["差"], ids["[SEP]"], *question_doc]
    assert example["seg"][0] == [1] * 6 + [2] * 5
    # "No Answer" fills the fourth choice: lower-cased word pieces, unknown here
    assert example["src"][3][:3] == [ids["[CLS]"], ids["[UNK]"], ids["[UNK]"]]
    [short] = read_c3(str(path), tokenizer, 7, 4)
    assert all(len(src) == 7 for src in short["src"])


def test_c3_answers_must_be_choices_and_choices_must_fit(vocab_path, tmp_path):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    path = tmp_path / "c3.json"
    path.write_text(json.dumps([[["好"], [{"question": "我", "choice": ["好", "差"], "answer": "好"},
                                         {"question": "我", "choice": ["好", "差"], "answer": "棒"}], "d0"]],
                               ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"c3.json, document 0, question 1: the answer '棒' is not one of the "
                                        r"choices \['好', '差'\]"):
        read_c3(str(path), tokenizer, 32, 4)
    with pytest.raises(DataError, match="document 0, question 0: 2 choices, more than --max_choices_num 1"):
        read_c3(str(path), tokenizer, 32, 1)
    assert [e["id"] for e in read_c3(str(path), tokenizer, 32, 4, with_labels=False)] == [None, None]
    unanswered = write_c3(tmp_path / "test.json", 2, 3, with_answer=False)
    with pytest.raises(DataError, match="test.json, document 0, question 0: no 'answer'"):
        read_c3(str(unanswered), tokenizer, 32, 4)


@pytest.mark.slow
def test_c3_fine_tunes_to_high_accuracy_and_infer_writes_what_it_scored(vocab_path, bert_config_path, tmp_path,
                                                                       caplog):
    files = {name: write_c3(tmp_path / f"{name}.json", n, seed)
             for name, n, seed in (("train", 160, 1), ("dev", 40, 2), ("test", 40, 3))}
    out = tmp_path / "c3.bin"
    caplog.set_level("INFO")
    mc.c3_finetune_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--train_path",
                         str(files["train"]), "--dev_path", str(files["dev"]), "--test_path", str(files["test"]),
                         "--output_model_path", str(out), "--epochs_num", "2", "--batch_size", "16",
                         "--learning_rate", "1e-3", "--seq_length", "40"])
    scores = _accuracy(caplog)
    assert len(scores) == 3 and scores[-1] >= 0.9, scores
    assert list(load_state_dict(str(out)))[-2:] == ["output_layer.weight", "output_layer.bias"]

    nolabel = write_c3(tmp_path / "nolabel.json", 40, 3, with_answer=False)
    prediction = tmp_path / "prediction.jsonl"
    mc.c3_infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path", str(nolabel),
                      "--load_model_path", str(out), "--prediction_path", str(prediction), "--seq_length", "40",
                      "--batch_size", "7"])
    lines = prediction.read_text(encoding="utf-8").splitlines()
    assert lines[0] == json.dumps({"id": 0, "label": json.loads(lines[0])["label"]})  # the original's line
    predicted = [json.loads(line) for line in lines]
    assert [p["id"] for p in predicted] == list(range(40))
    gold = [q["choice"].index(q["answer"]) for doc in json.loads(files["test"].read_text(encoding="utf-8"))
            for q in doc[1]]
    correct = sum(p["label"] == g for p, g in zip(predicted, gold))
    assert correct / len(gold) == pytest.approx(scores[-1], abs=1e-4)


def test_c3_inference_needs_question_ids_and_writes_nothing_without(vocab_path, bert_config_path, tmp_path):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    save_checkpoint(MultipleChoice(load_model_config(bert_config_path), tokenizer.vocab_size), str(tmp_path / "m.bin"))
    path = write_c3(tmp_path / "dev.json", 3, 2)
    data = json.loads(path.read_text(encoding="utf-8"))
    del data[1][1][0]["id"]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    prediction = tmp_path / "prediction.jsonl"
    with pytest.raises(DataError, match="dev.json: question 1 .* has no 'id'"):
        mc.c3_infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path", str(path),
                          "--load_model_path", str(tmp_path / "m.bin"), "--prediction_path", str(prediction)])
    assert not list(tmp_path.glob("prediction.jsonl*"))


# ---------------------------------------------------------------------- ChID
def write_chid(path: Path, answer_path: Path | None, lines: int, seed: int, first_tag: int = 0) -> Path:
    """Lines of 2-4 four-character idioms, one positive (the answer) and the rest negative, and a text with a
    blank."""
    rng = random.Random(seed)
    records, answers, tag = [], {}, first_tag
    for _ in range(lines):
        candidates = [_word(rng, 0, 4) for _ in range(rng.randint(1, 3))]
        answers[f"#idiom{tag:06d}#"] = rng.randrange(len(candidates) + 1)
        candidates.insert(answers[f"#idiom{tag:06d}#"], _word(rng, 1, 4))
        text = sentiment_sentence(rng, 1) + f"#idiom{tag:06d}#" + sentiment_sentence(rng, 0)
        records.append({"candidates": candidates, "content": [text]})
        tag += 1
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    if answer_path is not None:
        answer_path.write_text(json.dumps(answers), encoding="utf-8")
    return path


def test_tokens_around_keeps_half_on_each_side_and_shifts_at_the_edges():
    tokens = list(range(20))
    assert tokens_around(tokens, 10, 6) == ([7, 8, 9], [11, 12, 13])
    assert tokens_around(tokens, 1, 6) == ([0], [2, 3, 4, 5, 6])
    assert tokens_around(tokens, 18, 6) == ([13, 14, 15, 16, 17], [19])
    # both sides short: the whole text (the original took tokens[-4:8] = [] here and lost the left side)
    assert tokens_around(list(range(12)), 8, 16) == ([0, 1, 2, 3, 4, 5, 6, 7], [9, 10, 11])


def test_blank_contexts_mask_the_other_blanks_and_strip_each_run(vocab_path):
    tokenizer = build_tokenizer("char", vocab_path=vocab_path)
    specials = SpecialIds.of(tokenizer)
    ids = {c: tokenizer.piece_to_id(c) for c in "我们很好差"}
    contexts = blank_contexts(" 我们 #idiom000001# 很好#idiom000002#差 ", tokenizer, specials, 10, "f")
    assert [tag for tag, _, _ in contexts] == ["#idiom000001#", "#idiom000002#"]
    assert contexts[0][1:] == ([ids["我"], ids["们"]], [ids["很"], ids["好"], specials.mask, ids["差"]])
    assert contexts[1][1:] == ([ids["我"], ids["们"], specials.mask, ids["很"], ids["好"]], [ids["差"]])


def test_chid_inputs_are_the_originals(vocab_path, tmp_path):
    tokenizer = build_tokenizer("char", vocab_path=vocab_path)
    specials = SpecialIds.of(tokenizer)
    path = tmp_path / "chid.json"
    path.write_text(json.dumps({"candidates": ["好好", "差差"], "content": ["我们#idiom000007#很"]},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "answer.json").write_text(json.dumps({"#idiom000007#": 1}), encoding="utf-8")
    [example] = read_chid(str(path), str(tmp_path / "answer.json"), tokenizer, 12, 3)
    good, bad, we, men, very = (tokenizer.piece_to_id(c) for c in "好差我们很")
    cls, sep = specials.cls, specials.sep
    assert example["src"] == [[cls, good, good, sep, we, men, sep, very, sep, 0, 0, 0],
                              [cls, bad, bad, sep, we, men, sep, very, sep, 0, 0, 0], [0] * 12]
    assert example["seg"] == [[0] * 12] * 3 and example["label"] == 1
    assert example["blank"] == mc.Blank("#idiom000007#", 1)


def test_chid_bad_answers_and_lines_name_the_file(vocab_path, tmp_path):
    tokenizer = build_tokenizer("char", vocab_path=vocab_path)
    path = write_chid(tmp_path / "train.json", tmp_path / "answer.json", 3, 1)
    answers = json.loads((tmp_path / "answer.json").read_text())
    missing = sorted(answers)[1]
    del answers[missing]
    (tmp_path / "answer.json").write_text(json.dumps(answers))
    with pytest.raises(DataError, match=rf"answer.json: no answer for the blank {missing} \(.*train.json, line \d"):
        read_chid(str(path), str(tmp_path / "answer.json"), tokenizer, 32, 4)
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"candidates": ["好好"]\n')
    with pytest.raises(DataError, match="train.json, line 4: not valid JSON"):
        read_chid(str(path), None, tokenizer, 32, 4)
    with pytest.raises(DataError, match="train.json, line 2: 4 candidates, more than --max_choices_num 2"):
        read_chid(str(path), None, tokenizer, 32, 2)


def test_the_assignment_gives_each_blank_its_own_candidate_best_first():
    logits = torch.tensor([[5.0, 4.0, 0.0],
                           [4.5, 1.0, 0.0],
                           [3.0, 2.0, 1.0]])
    # a takes 0 (5.0, the best pair); c then takes 1 (2.0, before b's 1.0); b gets what is left: 2 (0.0)
    assert assign_candidates(["a", "b", "c"], logits) == {"a": 0, "b": 2, "c": 1}
    assert assign_candidates(["a", "b"], torch.tensor([[1.0, 0.0], [1.0, 0.0]])) == {"a": 0, "b": 1}


@pytest.mark.slow
def test_chid_fine_tunes_to_high_accuracy_and_infer_fills_the_blanks(vocab_path, bert_config_path, tmp_path,
                                                                    caplog):
    write_chid(tmp_path / "train.json", tmp_path / "train_answer.json", 120, 1)
    write_chid(tmp_path / "dev.json", tmp_path / "dev_answer.json", 30, 2, first_tag=1000)
    out = tmp_path / "chid.bin"
    caplog.set_level("INFO")
    common = ["--vocab_path", vocab_path, "--config_path", bert_config_path, "--seq_length", "32",
              "--max_choices_num", "4"]
    mc.chid_finetune_main([*common, "--train_path", str(tmp_path / "train.json"), "--train_answer_path",
                           str(tmp_path / "train_answer.json"), "--dev_path", str(tmp_path / "dev.json"),
                           "--dev_answer_path", str(tmp_path / "dev_answer.json"), "--output_model_path", str(out),
                           "--epochs_num", "2", "--batch_size", "16", "--learning_rate", "1e-3"])
    scores = _accuracy(caplog)
    assert len(scores) == 2 and max(scores) >= 0.9, scores

    prediction = tmp_path / "prediction.json"
    mc.chid_infer_main([*common, "--test_path", str(tmp_path / "dev.json"), "--load_model_path", str(out),
                        "--prediction_path", str(prediction), "--batch_size", "7"])
    predicted = json.loads(prediction.read_text())
    gold = json.loads((tmp_path / "dev_answer.json").read_text())
    assert list(predicted) == list(gold)  # every blank, in file order
    assert prediction.read_text().startswith('{\n  "#idiom001000#": ')  # the original's indent=2 layout
    accuracy = sum(predicted[t] == gold[t] for t in gold) / len(gold)
    assert accuracy == pytest.approx(max(scores), abs=1e-4)  # one blank per line: the assignment is the argmax

    # two blanks on a line (in two texts) share its candidates: each gets its own
    doubled = tmp_path / "doubled.json"
    records = [json.loads(line) for line in (tmp_path / "dev.json").read_text(encoding="utf-8").splitlines()]
    for record in records:
        record["content"].append(record["content"][0].replace("#idiom00", "#idiom10"))
    doubled.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
    mc.chid_infer_main([*common, "--test_path", str(doubled), "--load_model_path", str(out),
                        "--prediction_path", str(prediction), "--batch_size", "7"])
    predicted = json.loads(prediction.read_text())
    assert len(predicted) == 2 * len(gold)
    for tag in gold:
        twin = tag.replace("#idiom00", "#idiom10")
        assert predicted[tag] != predicted[twin]
        assert gold[tag] in (predicted[tag], predicted[twin])  # the answer went to one of the two identical blanks


def test_chid_test_set_needs_its_answers(vocab_path, bert_config_path, tmp_path):
    write_chid(tmp_path / "train.json", tmp_path / "answer.json", 2, 1)
    with pytest.raises(ConfigError, match="--test_path needs --test_answer_path"):
        mc.chid_finetune_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--train_path",
                               str(tmp_path / "train.json"), "--train_answer_path", str(tmp_path / "answer.json"),
                               "--dev_path", str(tmp_path / "train.json"), "--dev_answer_path",
                               str(tmp_path / "answer.json"), "--test_path", str(tmp_path / "train.json"),
                               "--output_model_path", str(tmp_path / "m.bin")])
    assert not list(tmp_path.glob("m.bin*"))


def test_unsegmented_inputs_attend_to_padding_as_the_original(vocab_path, bert_config_path):
    """ChID inputs carry segment 0 everywhere: the original's encoder then saw every position, padding included
    (its additive mask was the same on all keys). More padding therefore changes the score, unlike C3's."""
    tokenizer = build_tokenizer("char", vocab_path=vocab_path)
    config = load_model_config(bert_config_path)
    torch.manual_seed(0)
    segmented = MultipleChoice(config, tokenizer.vocab_size).eval()
    segmented.init_weights()
    unsegmented = MultipleChoice(config, tokenizer.vocab_size, segmented=False).eval()
    unsegmented.load_state_dict(segmented.state_dict())
    src = torch.tensor([[[2, 10, 11, 3, 12, 3]]])
    padded = torch.nn.functional.pad(src, (0, 4))
    with torch.no_grad():
        for model, seg_value, changes in ((segmented, 1, False), (unsegmented, 0, True)):
            short = model({"src": src, "seg": torch.full_like(src, seg_value)}).logits
            long_seg = torch.nn.functional.pad(torch.full_like(src, seg_value), (0, 4))
            long = model({"src": padded, "seg": long_seg}).logits
            assert (not torch.allclose(short, long, atol=1e-6)) == changes


def test_chid_inference_refuses_a_blank_twice_and_writes_nothing(vocab_path, bert_config_path, tmp_path):
    tokenizer = build_tokenizer("char", vocab_path=vocab_path)
    model = MultipleChoice(load_model_config(bert_config_path), tokenizer.vocab_size, segmented=False)
    save_checkpoint(model, str(tmp_path / "m.bin"))
    path = write_chid(tmp_path / "test.json", None, 3, 1)
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")
    prediction = tmp_path / "prediction.json"
    with pytest.raises(DataError, match=r"test.json: the blank #idiom000001# occurs twice"):
        mc.chid_infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path", str(path),
                            "--load_model_path", str(tmp_path / "m.bin"), "--prediction_path", str(prediction),
                            "--seq_length", "32", "--max_choices_num", "4"])
    assert not list(tmp_path.glob("prediction.json*"))
