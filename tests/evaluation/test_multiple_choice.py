"""Multiple choice: known-logits fixtures get exactly the expected accuracy, layouts, prompts, batching."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
import sentencepiece
import torch
from torch import nn

from tencentpretrain.errors import ConfigError, DataError
from tencentpretrain.evaluation.multiple_choice import (
    HEADERS,
    ChoiceConfig,
    Question,
    build_prompt,
    evaluate_choice,
    format_table,
    load_benchmark,
    next_token_logprobs,
    prepare_question,
    read_questions,
    write_choice_outputs,
)
from tencentpretrain.evaluation.subjects import CEVAL_SUBJECTS, CMMLU_SUBJECTS
from tencentpretrain.models.model import build_model
from tencentpretrain.tokenizers import build_tokenizer
from tests.helpers import REPO_ROOT, tiny_llama_config

SPM = f"{REPO_ROOT}/tests/assets/tiny_spm.model"
HEADER = ["id", "question", "A", "B", "C", "D", "answer", "explanation"]

# subject -> (questions, dev examples); a row is (question, A, B, C, D, answer)
PHYSICS = (
    [("光在真空中的速度约为", "3万千米每秒", "30万千米每秒", "300千米每秒", "3千米每秒", "B"),
     ("水的沸点在标准大气压下是", "50度", "80度", "100度", "120度", "C"),
     ("力的单位是", "牛顿", "焦耳", "瓦特", "帕斯卡", "A")],
    [("地球绕太阳一周大约需要", "一天", "一月", "一年", "十年", "C")],
)
LAW = (
    [("中国的根本大法是", "宪法", "刑法", "民法典", "行政法", "A"),
     ("法律面前人人", "不同", "有别", "分等", "平等", "D")],
    [("合同成立需要", "要约和承诺", "只有要约", "只有承诺", "都不需要", "A")],
)


def write_csv(path, rows, header=HEADER, with_answer=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header if with_answer else header[:6])
        for i, row in enumerate(rows):
            writer.writerow([i, *row, ""] if with_answer else [i, *row[:5]])


def write_ceval(root, subjects=None, split="val"):
    for name, (questions, dev) in (subjects or {"high_school_physics": PHYSICS, "law": LAW}).items():
        write_csv(root / split / f"{name}_{split}.csv", questions)
        write_csv(root / "dev" / f"{name}_dev.csv", dev)
    return root


def as_question(i, row):
    return Question(str(i), row[0], tuple(zip("ABCD", row[1:5], strict=True)), row[5])


class KnownLogitsModel(nn.Module):
    """A stand-in exposing Model.logits: the next-token logits after a context are looked up by the exact
    context ids, ``table[tuple(ids)] = {token: logit}``; every other logit is 0. It checks that each row of a
    left-padded batch gets positions 0, 1, ... on its real tokens."""

    def __init__(self, vocab_size: int, table: dict[tuple[int, ...], dict[int, float]]) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # the scorer reads the device from the parameters
        self.vocab_size, self.table, self.contexts = vocab_size, table, []

    def logits(self, src, seg=None, *, positions=None, cache=None, last_only=False):
        seg = torch.ones_like(src) if seg is None else seg
        out = torch.zeros(src.shape[0], src.shape[1], self.vocab_size)
        for r in range(src.shape[0]):
            real = seg[r] > 0
            ids = tuple(src[r][real].tolist())
            assert bool(real[-1]) and positions[r][real].tolist() == list(range(len(ids)))
            self.contexts.append(ids)
            for token, value in self.table.get(ids, {}).items():
                out[r, -1, token] = value
        return out[:, -1:] if last_only else out


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("sentencepiece", spm_model_path=SPM)


@pytest.fixture(scope="module")
def merged_tokenizer(tmp_path_factory):
    """A LLaMA-like tokenizer whose vocabulary has the pieces "：A" ... "：D"."""
    prefix = tmp_path_factory.mktemp("spm") / "merged"
    sentencepiece.SentencePieceTrainer.train(
        input=f"{REPO_ROOT}/tests/assets/tiny_spm_corpus.txt", model_prefix=str(prefix), model_type="bpe",
        vocab_size=700, character_coverage=0.98, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        user_defined_symbols=["：A", "：B", "：C", "：D"], minloglevel=2,
    )
    return build_tokenizer("sentencepiece", spm_model_path=f"{prefix}.model")


def ceval_prompt(subject, question_row, examples=()):
    header = HEADERS["ceval"].format(subject=CEVAL_SUBJECTS[subject].name_zh)
    return build_prompt(header, [as_question(i, r) for i, r in enumerate(examples)], as_question(0, question_row))


def test_prompt_format_is_ceval_style():
    text = ceval_prompt("law", LAW[0][0], LAW[1])
    assert text == (
        "以下是中国关于法学考试的单项选择题，请选出其中的正确答案。\n\n"
        "合同成立需要\nA. 要约和承诺\nB. 只有要约\nC. 只有承诺\nD. 都不需要\n答案：A\n\n"
        "中国的根本大法是\nA. 宪法\nB. 刑法\nC. 民法典\nD. 行政法\n答案："
    )


@pytest.mark.parametrize("shots", [0, 1])
def test_known_logits_give_exactly_the_expected_accuracy(tmp_path, tokenizer, shots):
    root = write_ceval(tmp_path / "ceval")
    planned = {"high_school_physics": "BCD", "law": "AA"}  # right, right, wrong; right, wrong
    table = {}
    for subject, (questions, dev) in {"high_school_physics": PHYSICS, "law": LAW}.items():
        for row, letter in zip(questions, planned[subject], strict=True):
            ids = [tokenizer.bos_id] + tokenizer.encode(ceval_prompt(subject, row, dev[:shots]))
            # how this tokenizer writes the letter after "答案：" (the piece "A"; the byte <0x44> for "D")
            table[tuple(ids)] = {tokenizer.encode("答案：" + letter)[-1]: 5.0}
    model = KnownLogitsModel(tokenizer.vocab_size, table)
    benchmark, subjects = load_benchmark(str(root), "val")
    report, records = evaluate_choice(
        model, tokenizer, subjects, ChoiceConfig(shots=shots, batch_size=2, max_length=512), benchmark=benchmark
    )
    assert [r["prediction"] for r in records] == list("BCDAA")
    assert [r["shots"] for r in records] == [shots] * 5
    assert report["subjects"]["high_school_physics"] == {
        "category": "STEM", "questions": 3, "answered": 3, "correct": 2, "accuracy": 2 / 3
    }
    assert report["subjects"]["law"]["accuracy"] == 0.5
    assert report["categories"]["STEM"]["accuracy"] == 2 / 3
    assert report["categories"]["Humanities"]["accuracy"] == 0.5
    assert report["overall"]["accuracy"] == 3 / 5
    assert report["overall"]["macro_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert "| high_school_physics | STEM | 3 | 2 | 66.67 |" in format_table(report)
    assert "| Overall | 2 | 5 | 60.00 | 58.33 |" in format_table(report)


def test_only_the_merged_colon_letter_piece_carries_the_answer(tmp_path, merged_tokenizer):
    tok = merged_tokenizer
    questions = [PHYSICS[0][0], PHYSICS[0][1], LAW[0][1]]  # answers B, C, D: none is "A"
    root = write_ceval(tmp_path / "ceval", {"logic": (questions, [])})
    table = {}
    for row in questions:
        text = HEADERS["ceval"].format(subject="逻辑学") + build_prompt("", [], as_question(0, row))
        ids = [tok.bos_id] + tok.encode(text)
        with_letter = [tok.bos_id] + tok.encode(text + row[5])
        # the tokenizer writes "答案：C" as "答案" + "：C": the answer token follows "答案", not "："
        assert tok.id_to_piece(ids[-1]) == "：" and with_letter[:-1] == ids[:-1]
        assert tok.id_to_piece(with_letter[-1]) == "：" + row[5]
        table[tuple(ids[:-1])] = {tok.piece_to_id("：" + row[5]): 5.0}
    model = KnownLogitsModel(tok.vocab_size, table)
    benchmark, subjects = load_benchmark(str(root), "val")
    report, records = evaluate_choice(model, tok, subjects, ChoiceConfig(max_length=512), benchmark=benchmark)
    # the logits after the full prompt (ending in "：") are all 0, so reading "A"/"▁A" there would tie and pick
    # "A" every time: 0% accuracy. The merged candidate finds every answer.
    assert [r["prediction"] for r in records] == ["B", "C", "D"]
    assert report["overall"]["accuracy"] == 1.0


@pytest.mark.parametrize("reduce,expected", [("max", "B"), ("logsumexp", "A")])
def test_max_or_logsumexp_over_a_letters_tokenizations(tmp_path, tokenizer, reduce, expected):
    root = write_ceval(tmp_path / "ceval", {"logic": ([LAW[0][0]], [])})
    text = HEADERS["ceval"].format(subject="逻辑学") + build_prompt("", [], as_question(0, LAW[0][0]))
    ids = [tokenizer.bos_id] + tokenizer.encode(text)
    piece = tokenizer.piece_to_id
    # "A" and "▁A" at 2.0 each (total probability mass 2 e^2) against "B" at 2.5 (e^2.5 < 2 e^2)
    table = {tuple(ids): {piece("A"): 2.0, piece("\u2581A"): 2.0, piece("B"): 2.5}}
    _, subjects = load_benchmark(str(root), "val")
    _, records = evaluate_choice(
        KnownLogitsModel(tokenizer.vocab_size, table), tokenizer, subjects, ChoiceConfig(max_length=512, reduce=reduce)
    )
    assert records[0]["prediction"] == expected


def test_scores_of_a_real_model_equal_each_prompt_alone(tmp_path, tokenizer):
    torch.manual_seed(7)
    model = build_model(tiny_llama_config(max_seq_length=512), tokenizer.vocab_size).eval()
    _, subjects = load_benchmark(str(write_ceval(tmp_path / "ceval")), "val")
    config = ChoiceConfig(shots=1, batch_size=3)
    _, records = evaluate_choice(model, tokenizer, subjects, config)
    i = 0
    for subject in subjects:
        for question in subject.questions:
            header = HEADERS["ceval"].format(subject=CEVAL_SUBJECTS[subject.name].name_zh)
            p = prepare_question(tokenizer, subject, question, config, header, 512)
            with torch.no_grad():
                logprobs = model.logits(torch.tensor([p.prompt_ids]))[0, -1].log_softmax(-1)
            for letter in "ABCD":
                assert all(c.context == len(p.prompt_ids) for c in p.candidates[letter])  # no merges here
                expected = max(float(logprobs[c.token]) for c in p.candidates[letter])
                assert records[i]["scores"][letter] == pytest.approx(expected, abs=1e-5)
            i += 1
    assert i == len(records) == 5


def test_left_padded_batches_equal_rows_alone(tokenizer):
    torch.manual_seed(8)
    model = build_model(tiny_llama_config(), tokenizer.vocab_size).eval()
    contexts = [tokenizer.encode(t) for t in ("短", "中国的首都是北京", "The quick brown fox jumps")]
    batched = next_token_logprobs(model, contexts, batch_size=3, max_length=64)
    for ids, got in zip(contexts, batched, strict=True):
        with torch.no_grad():
            alone = model.logits(torch.tensor([ids]))[0, -1].float().log_softmax(-1)
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)


def test_shots_are_dropped_until_the_prompt_fits(tmp_path, tokenizer):
    dev = [PHYSICS[0][i % 3] for i in range(5)]
    _, subjects = load_benchmark(str(write_ceval(tmp_path / "c", {"logic": ([LAW[0][0]], dev)})), "val")
    question = subjects[0].questions[0]
    full = prepare_question(tokenizer, subjects[0], question, ChoiceConfig(shots=5), "头\n\n", 10_000)
    one = prepare_question(tokenizer, subjects[0], question, ChoiceConfig(shots=1), "头\n\n", 10_000)
    assert full.shots == 5 and one.shots == 1
    limited = prepare_question(tokenizer, subjects[0], question, ChoiceConfig(shots=5), "头\n\n", len(one.prompt_ids))
    assert limited.shots == 1 and limited.prompt_ids == one.prompt_ids and not limited.truncated


def test_cmmlu_layout_and_c_eval_flat_layout(tmp_path, tokenizer):
    cmmlu = tmp_path / "cmmlu"
    header = ["", "Question", "A", "B", "C", "D", "Answer"]
    write_csv(cmmlu / "test" / "agronomy.csv", PHYSICS[0], header=header)
    write_csv(cmmlu / "dev" / "agronomy.csv", PHYSICS[1], header=header)
    benchmark, subjects = load_benchmark(str(cmmlu), "test")
    assert benchmark == "cmmlu" and subjects[0].name == "agronomy" and len(subjects[0].dev) == 1
    options = tuple(zip("ABCD", PHYSICS[0][2][1:5], strict=True))
    assert subjects[0].questions[2] == Question("2", "力的单位是", options, "A")
    flat = tmp_path / "flat"
    write_csv(flat / "law_val.csv", LAW[0])
    write_csv(flat / "law_dev.csv", LAW[1])
    benchmark, subjects = load_benchmark(str(flat), "val")
    assert benchmark == "ceval" and subjects[0].name == "law" and len(subjects[0].dev) == 1
    with pytest.raises(ConfigError, match="no 'dev2' files"):
        load_benchmark(str(flat), "dev2")
    with pytest.raises(ConfigError, match="unknown subject"):
        load_benchmark(str(flat), "val", only=["physics"])


def test_cmmlu_report_has_china_specific_group(tmp_path, tokenizer):
    root = tmp_path / "cmmlu"
    header = ["", "Question", "A", "B", "C", "D", "Answer"]
    for name in ("agronomy", "chinese_history"):
        write_csv(root / "test" / f"{name}.csv", LAW[0], header=header)
    benchmark, subjects = load_benchmark(str(root), "test")
    model = KnownLogitsModel(tokenizer.vocab_size, {})  # no preference: always "A" (first on a tie)
    report, _ = evaluate_choice(model, tokenizer, subjects, ChoiceConfig(max_length=512), benchmark=benchmark)
    assert list(report["categories"]) == ["Humanities", "Other", "China specific"]
    assert report["categories"]["China specific"]["accuracy"] == 0.5
    prompts = [tokenizer.decode(c) for c in model.contexts]
    expected = "以下是关于中国历史的单项选择题，请直接给出正确答案的选项。\n\n中国的根本大法是"
    assert any(p.startswith(expected) for p in prompts)


def test_test_split_without_answers_writes_predictions(tmp_path, tokenizer):
    root = tmp_path / "ceval"
    write_csv(root / "test" / "law_test.csv", LAW[0], with_answer=False)
    _, subjects = load_benchmark(str(root), "test")
    assert [q.answer for q in subjects[0].questions] == [None, None]
    model = KnownLogitsModel(tokenizer.vocab_size, {})
    report, records = evaluate_choice(model, tokenizer, subjects, ChoiceConfig(max_length=512))
    assert report["overall"]["accuracy"] is None and report["overall"]["questions"] == 2
    paths = [str(tmp_path / n) for n in ("r.json", "p.jsonl", "s.json")]
    write_choice_outputs(report, records, *paths)
    assert json.loads(open(paths[2]).read()) == {"law": {"0": "A", "1": "A"}}
    assert len(open(paths[1]).read().splitlines()) == 2
    assert json.loads(open(paths[0]).read())["subjects"]["law"]["answered"] == 0


def test_bad_answer_letter_names_the_line(tmp_path):
    path = tmp_path / "x_val.csv"
    write_csv(path, [LAW[0][0], (*LAW[0][1][:5], "E")])
    with pytest.raises(DataError, match=r"x_val.csv:3: answer 'E'"):
        read_questions(str(path))


def test_subject_tables():
    assert len(CEVAL_SUBJECTS) == 52 and len(CMMLU_SUBJECTS) == 67
    assert Counter(s.category for s in CEVAL_SUBJECTS.values()) == {
        "STEM": 20, "Social Science": 10, "Humanities": 11, "Other": 11
    }
    assert CEVAL_SUBJECTS["law"].name_zh == "法学" and CMMLU_SUBJECTS["chinese_history"].china_specific


def test_config_is_validated():
    with pytest.raises(ConfigError, match="reduce"):
        ChoiceConfig(reduce="mean")
    with pytest.raises(ConfigError, match="shots"):
        ChoiceConfig(shots=-1)
