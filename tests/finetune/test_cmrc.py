"""run_cmrc / run_cmrc_infer: CMRC2018 metrics on hand-checked examples, the original's windows and targets,
answers reassembled across windows, learning to a high EM, infer agreeing with the report, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.errors import DataError
from tencentpretrain.finetune import cmrc
from tencentpretrain.finetune.cmrc import (
    Question,
    Window,
    build_windows,
    choose_answers,
    context_windows,
    exact_match,
    f1_score,
    read_cmrc,
    score_predictions,
    window_span,
)
from tencentpretrain.tokenizers import build_tokenizer
from tests.finetune.conftest import FILLER

# The answer starts with one of FIRST, ends with one of LAST, may hold MIDDLE characters between, and follows
# the cue; no other character of the context is one of them, so a tiny model learns the spans in seconds.
FIRST, MIDDLE, LAST = "好棒赞", "美优秀喜", "欢满意"
CUE = "觉得"
PLAIN = "".join(c for c in FILLER if c not in FIRST + MIDDLE + LAST + CUE)
QUESTION = "我们觉得？"


# ---------------------------------------------------------------------- data
def synthetic_question(rng: random.Random, qid: str, context_length: int) -> dict:
    """A context of plain characters with ``CUE answer`` somewhere in it; the answer is 2-4 characters."""
    answer = (rng.choice(FIRST) + "".join(rng.choice(MIDDLE) for _ in range(rng.randint(0, 2)))
              + rng.choice(LAST))
    span = CUE + answer
    before = rng.randint(0, context_length - len(span))
    context = ("".join(rng.choice(PLAIN) for _ in range(before)) + span
               + "".join(rng.choice(PLAIN) for _ in range(context_length - before - len(span))))
    start = before + len(CUE)
    return {"context": context, "qas": [{"id": qid, "question": QUESTION,
                                         "answers": [{"text": answer, "answer_start": start}]}]}


def write_cmrc(path: Path, n: int, seed: int, context_length: tuple[int, int] = (20, 30)) -> Path:
    rng = random.Random(seed)
    paragraphs = [synthetic_question(rng, f"{path.stem}_{i}", rng.randint(*context_length)) for i in range(n)]
    path.write_text(json.dumps({"version": "v1.0", "data": [{"paragraphs": paragraphs}]}, ensure_ascii=False),
                    encoding="utf-8")
    return path


def _args(files: dict[str, Path], vocab_path: str, config_path: str, out: Path, *extra: str) -> list[str]:
    return ["--vocab_path", vocab_path, "--config_path", config_path, "--train_path", str(files["train"]),
            "--dev_path", str(files["dev"]), "--output_model_path", str(out), "--seq_length", "32",
            "--doc_stride", "8", "--epochs_num", "3", "--batch_size", "16", "--learning_rate", "2e-3",
            "--report_steps", "10", *extra]


def _reports(caplog) -> list[dict[str, float]]:
    """The ``Avg: ..,F1:..,EM:..,Total:..,Skip:..`` lines, parsed."""
    reports = []
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith("Avg: "):
            reports.append({k: float(v) for k, v in (item.split(":") for item in message.split(","))})
    return reports


# ---------------------------------------------------------------------- metrics
def test_f1_is_over_the_longest_common_run_of_characters():
    # "光荣和ω-force" vs "光荣和ω公司": punctuation "-" removed -> 9 and 6 characters, common run "光荣和ω" (4)
    p, r = 4 / 6, 4 / 9
    assert f1_score(["光荣和ω-force"], "光荣和ω公司") == pytest.approx(2 * p * r / (p + r))
    # the best answer counts; a run, not a subsequence: "村雨城" in "谜之村雨城" -> p = 1, r = 3/5
    assert f1_score(["任天堂", "谜之村雨城"], "村雨城") == pytest.approx(2 * 0.6 / 1.6)
    assert f1_score(["甲乙丙丁"], "甲乙X丙丁") == pytest.approx(2 * (2 / 5) * (2 / 4) / (2 / 5 + 2 / 4))
    assert f1_score(["村雨城"], "东京") == 0.0 and f1_score(["村雨城"], "") == 0.0
    assert f1_score(["Port Royal"], "port royal") == 1.0  # lower-cased, as the official CMRC2018 script


def test_exact_match_ignores_case_surrounding_space_and_punctuation():
    assert exact_match(["《战国无双3》"], " 战国无双3 ") == 1.0
    assert exact_match(["ABC，DE"], "abcde") == 1.0
    assert exact_match(["光荣", "光荣和ω-force"], "光荣和ω") == 0.0
    assert exact_match(["光荣", "光荣和ω-force"], "光荣和ωforce") == 1.0


def test_scores_are_percent_of_all_questions_and_empty_predictions_are_skipped():
    def q(*answers):
        return Question("x", "?", "", answers, None)

    scores = score_predictions([(q("甲乙"), "甲乙"), (q("丙丁戊"), "丙"), (q("己"), ""), (q("庚"), "庚")])
    f1_second = 2 * 1 * (1 / 3) / (1 + 1 / 3)
    assert scores.total == 4 and scores.skipped == 1
    assert scores.em == pytest.approx(100 * 2 / 4)  # a one-character answer counts (the original skipped it)
    assert scores.f1 == pytest.approx(100 * (1 + f1_second + 1) / 4)
    assert scores.average == pytest.approx((scores.em + scores.f1) / 2)


# ---------------------------------------------------------------------- windows
def test_context_windows_follow_the_original_stride():
    # window = 20 - 5 - 3 = 12 characters, starts 4 apart; the last ends at the context's end
    assert context_windows(30, 5, 20, 4) == [(0, 12), (4, 12), (8, 12), (12, 12), (16, 12), (20, 10)]
    assert context_windows(10, 5, 20, 4) == [(0, 10)]
    assert context_windows(30, 5, 20, 50) == [(0, 12), (12, 12), (24, 6)]  # a stride past the window: no gap


def test_window_targets_clip_the_answer_or_point_at_cls():
    q = Question("x", "问题", "0123456789" * 3, ("3456",), 13)  # answer at 13..16, context from position 4
    assert window_span(q, 0, 20) == (4 + 13, 4 + 16)
    assert window_span(q, 10, 12) == (4 + 3, 4 + 6)
    assert window_span(q, 15, 12) == (4, 4 + 1)  # only "56" inside: clipped to the window's start
    assert window_span(q, 0, 15) == (4 + 13, 4 + 14)  # only "34" inside: clipped to the window's end
    assert window_span(q, 17, 12) == (0, 0) and window_span(q, 0, 13) == (0, 0)


def test_windows_encode_question_and_context_padded_to_seq_length(vocab_path):
    tokenizer = build_tokenizer("char", vocab_path=vocab_path)
    q = Question("x", "很好", "我们 觉得这个酒店好", ("好",), 9)
    [example] = build_windows([q], tokenizer, 16, 4, with_targets=True, path="f")
    ids = {c: tokenizer.piece_to_id(c) for c in ["[CLS]", "[SEP]", "[PAD]"] + list("很好我们觉得这个酒店")}
    unk = tokenizer.piece_to_id("[UNK]")
    assert example["src"] == [ids["[CLS]"], ids["很"], ids["好"], ids["[SEP]"], ids["我"], ids["们"], unk,
                              *(ids[c] for c in "觉得这个酒店好"), ids["[SEP]"], ids["[PAD]"]]
    assert example["seg"] == [1] * 4 + [2] * 11 + [0]
    assert (example["start_position"], example["end_position"]) == (13, 13)


def _window_logits(window: Window, start: int, end: int, strength: float, seq_length: int = 32) -> torch.Tensor:
    """Logits (T, 2) of a window that puts ``strength`` on the absolute context span start..end."""
    logits = torch.zeros(seq_length, 2)
    first = len(window.question.question) + 2
    logits[start - window.offset + first, 0] = strength
    logits[end - window.offset + first, 1] = strength
    return logits


def test_the_answer_comes_from_the_window_that_scores_highest(vocab_path):
    tokenizer = build_tokenizer("char", vocab_path=vocab_path)
    context = "".join(str(i % 10) for i in range(40))
    q = Question("x", "问", context, ("",), None)
    examples = build_windows([q], tokenizer, 20, 6, with_targets=False, path="f")
    windows = [e["window"] for e in examples]
    assert [(w.offset, w.length) for w in windows] == [(0, 16), (6, 16), (12, 16), (18, 16), (24, 16)]
    # the answer 14..19 crosses the first windows' boundaries: window 2 (12..27) holds it whole and is surest
    logits = [_window_logits(windows[0], 14, 15, 3.0, 20), _window_logits(windows[1], 14, 19, 2.0, 20),
              _window_logits(windows[2], 14, 19, 6.0, 20), _window_logits(windows[3], 20, 22, 4.0, 20),
              torch.zeros(20, 2)]
    [(question, answer)] = choose_answers(windows, logits)
    assert question is q and answer == context[14:20]
    # --max_answer_length 3 keeps the end within 3 characters of the start
    [(_, short)] = choose_answers(windows, logits, max_answer_length=3)
    assert short == context[20:23]  # window 3's span is now the best one


# ---------------------------------------------------------------------- fine-tuning and inference
def _answer_cut_by_a_window(question: Question, seq_length: int, doc_stride: int) -> bool:
    """Whether some window over the question's context holds only part of its answer."""
    first, last = question.answer_start, question.answer_end
    for offset, length in context_windows(len(question.context), len(question.question), seq_length, doc_stride):
        inside = min(last, offset + length - 1) - max(first, offset) + 1
        if 0 < inside < len(question.answers[0]):
            return True
    return False


@pytest.mark.slow
def test_fine_tunes_to_high_em_across_windows_and_infer_writes_what_it_scored(vocab_path, bert_config_path,
                                                                             tmp_path, caplog):
    # contexts of 30-45 characters in windows of 32 - 5 - 3 = 24 starting 8 apart: an answer is in 1 to 3
    # windows, often cut by a window's edge in some of them
    files = {name: write_cmrc(tmp_path / f"{name}.json", n, seed, context_length=(30, 45))
             for name, n, seed in (("train", 120, 1), ("dev", 40, 2))}
    out = tmp_path / "cmrc.bin"
    caplog.set_level("INFO")
    cmrc.finetune_main(_args(files, vocab_path, bert_config_path, out))
    reports = _reports(caplog)
    assert len(reports) == 3
    best = max(reports, key=lambda r: r["Avg"])
    assert best["EM"] >= 90.0 and best["F1"] >= 95.0, reports
    assert best["Total"] == 40
    assert list(load_state_dict(str(out)))[-2:] == ["output_layer.weight", "output_layer.bias"]

    prediction = tmp_path / "prediction.json"
    cmrc.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path", str(files["dev"]),
                     "--load_model_path", str(out), "--prediction_path", str(prediction), "--seq_length", "32",
                     "--doc_stride", "8", "--batch_size", "7"])
    text = prediction.read_text(encoding="utf-8")
    predicted = json.loads(text)
    assert text.startswith('{\n    "dev_0": ') and text.endswith("}\n")  # the original's indent=4 layout
    questions = read_cmrc(str(files["dev"]), check_spans=True)
    assert list(predicted) == [q.id for q in questions]
    assert sum(_answer_cut_by_a_window(q, 32, 8) for q in questions) >= 5  # the windows had to be reassembled
    scores = score_predictions([(q, predicted[q.id]) for q in questions])
    assert scores.em == pytest.approx(best["EM"], abs=1e-3) and scores.f1 == pytest.approx(best["F1"], abs=1e-3)


def test_an_answer_start_that_misses_its_text_names_the_file_and_question(vocab_path, bert_config_path, tmp_path):
    files = {name: write_cmrc(tmp_path / f"{name}.json", 8, seed) for name, seed in (("train", 1), ("dev", 2))}
    data = json.loads(files["train"].read_text(encoding="utf-8"))
    qa = data["data"][0]["paragraphs"][3]["qas"][0]
    qa["answers"][0]["answer_start"] += 1
    files["train"].write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "m.bin"
    start = qa["answers"][0]["answer_start"]
    with pytest.raises(DataError, match=rf"train.json, question train_3: answer_start {start} does not point at the "
                                        r"answer .*the text occurs at"):
        cmrc.finetune_main(_args(files, vocab_path, bert_config_path, out, "--epochs_num", "1"))
    assert not out.exists() and not list(tmp_path.glob("m.bin*"))


def test_an_evaluation_file_is_scored_on_texts_and_a_misplaced_start_is_only_counted(tmp_path, caplog):
    path = write_cmrc(tmp_path / "dev.json", 4, 2)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] = -1
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    caplog.set_level("WARNING")
    assert len(read_cmrc(str(path), check_spans=False)) == 4
    assert "1 question(s) whose first answer is not at its answer_start" in caplog.text
    with pytest.raises(DataError, match="question dev_1: the first answer .* has no valid answer_start"):
        read_cmrc(str(path), check_spans=True)


def test_malformed_files_are_refused_with_what_is_wrong(tmp_path, vocab_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"context": "x"}]), encoding="utf-8")
    with pytest.raises(DataError, match="bad.json: not a CMRC2018/SQuAD file"):
        read_cmrc(str(bad), check_spans=False)
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "甲乙", "qas": [{"id": "q1", "question": "甲",
                                                                                     "answers": []}]}]}]}),
                   encoding="utf-8")
    with pytest.raises(DataError, match="bad.json, question q1: no answers"):
        read_cmrc(str(bad), check_spans=False)
    assert read_cmrc(str(bad), check_spans=False, need_answers=False)[0].answers == ()
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "", "qas": []}]}]}), encoding="utf-8")
    with pytest.raises(DataError, match="bad.json, article 0, paragraph 0: the context is empty"):
        read_cmrc(str(bad), check_spans=False, need_answers=False)
    long_question = Question("q9", "很" * 30, "甲乙", ("甲",), 0)
    with pytest.raises(DataError, match="f, question q9: the question has 30 characters"):
        build_windows([long_question], build_tokenizer("char", vocab_path=vocab_path), 32, 8, with_targets=True,
                      path="f")


def test_inference_refuses_duplicate_ids_and_writes_nothing(vocab_path, bert_config_path, tmp_path):
    from tencentpretrain.checkpoint import save_checkpoint
    from tencentpretrain.config import load_model_config

    tokenizer = build_tokenizer("char", vocab_path=vocab_path)
    model = cmrc.MachineReadingComprehension(load_model_config(bert_config_path), tokenizer.vocab_size)
    save_checkpoint(model, str(tmp_path / "m.bin"))
    path = write_cmrc(tmp_path / "test.json", 3, 4)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["data"][0]["paragraphs"][2]["qas"][0]["id"] = "test_0"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    prediction = tmp_path / "prediction.json"
    with pytest.raises(DataError, match="test.json: the question id 'test_0' occurs twice"):
        cmrc.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path", str(path),
                         "--load_model_path", str(tmp_path / "m.bin"), "--prediction_path", str(prediction)])
    assert not list(tmp_path.glob("prediction.json*"))
