"""run_ner / run_ner_infer: learning with and without a CRF, the original's entity evaluation, keys and prediction
file, padding that does not count, bad input named by file and line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tencentpretrain.checkpoint import load_state_dict
from tencentpretrain.config import load_model_config
from tencentpretrain.errors import CheckpointError, DataError
from tencentpretrain.finetune import ner
from tencentpretrain.finetune.ner import EntityCounts, NerLabels, NerTagger, collate_for, entity_spans, read_ner
from tencentpretrain.tokenizers import build_tokenizer

LABEL2ID = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}
# Every character has one tag: a surname starts a person, given names continue it; a place character starts a
# location, a suffix continues it (all are characters of the conftest vocabulary).
SURNAME, GIVEN, PLACE, SUFFIX = "好棒赞", "美优秀喜", "差烂坏", "糟失望"
OUTSIDE = "这个酒店房间的很非常我们觉得还是了一次东西"


def _entity(rng: random.Random) -> tuple[list[str], str]:
    if rng.random() < 0.5:
        return [rng.choice(SURNAME)] + [rng.choice(GIVEN) for _ in range(rng.randint(1, 2))], "PER"
    return [rng.choice(PLACE)] + [rng.choice(SUFFIX) for _ in range(rng.randint(1, 2))], "LOC"


def ner_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """1-3 entities between 0-4 outside characters (so entities are sometimes adjacent)."""
    tokens, tags = [], []
    for _ in range(rng.randint(1, 3)):
        for _ in range(rng.randint(0, 4)):
            tokens.append(rng.choice(OUTSIDE))
            tags.append("O")
        chars, kind = _entity(rng)
        tokens += chars
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(chars) - 1)
    for _ in range(rng.randint(0, 3)):
        tokens.append(rng.choice(OUTSIDE))
        tags.append("O")
    return tokens, tags


def write_ner_tsv(path: Path, n: int, seed: int, *, noise: float = 0.0) -> Path:
    """A NER TSV of ``n`` lines; with ``noise``, that share of lines has one gold tag replaced by a random one (so
    even a perfect tagger scores below 1 on it)."""
    rng = random.Random(seed)
    lines = ["text_a\tlabel"]
    for _ in range(n):
        tokens, tags = ner_sentence(rng)
        if rng.random() < noise:
            tags[rng.randrange(len(tags))] = rng.choice(list(LABEL2ID))
        lines.append(" ".join(tokens) + "\t" + " ".join(tags))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def ner_files(tmp_path) -> dict[str, str]:
    files = {name: str(write_ner_tsv(tmp_path / f"{name}.tsv", n, seed, noise=noise))
             for name, n, seed, noise in (("train", 200, 1, 0.0), ("dev", 60, 2, 0.0), ("noisy", 80, 3, 0.5))}
    (tmp_path / "label2id.json").write_text(json.dumps(LABEL2ID), encoding="utf-8")
    return {**files, "label2id": str(tmp_path / "label2id.json")}


def _train_args(files, vocab_path, config_path, out, *extra):
    return ["--vocab_path", vocab_path, "--config_path", config_path, "--train_path", files["train"],
            "--dev_path", files["dev"], "--label2id_path", files["label2id"], "--output_model_path", str(out),
            "--epochs_num", "2", "--batch_size", "16", "--learning_rate", "1e-3", "--report_steps", "5", *extra]


def _reports(caplog) -> list[tuple[float, float, float]]:
    """The (precision, recall, f1) lines that follow each "Report precision, recall, and f1:"."""
    messages = [r.getMessage() for r in caplog.records]
    return [tuple(float(v) for v in messages[i + 1].split(", "))
            for i, m in enumerate(messages) if m == "Report precision, recall, and f1:"]


def reference_scores(gold_lines: list[list[str]], pred_lines: list[list[str]]) -> tuple[float, float, float]:
    """The original's evaluate, written out as it was: the sentences' tags flattened into one stream, each
    followed by a [PAD] (as its padding was); an entity runs from a B... tag to before the next [PAD], O or B...;
    a predicted one counts when the gold stream has the same span and the same tags throughout."""
    gold = [t for line in gold_lines for t in [*line, "[PAD]"]]
    pred = [t for line in pred_lines for t in [*line, "[PAD]"]]

    def spans(tags, counted):
        found = set()
        for j, tag in enumerate(tags):
            if tag.startswith("B") and counted(j):
                k = j + 1
                while k < len(tags) and tags[k] not in ("[PAD]", "O") and not tags[k].startswith("B"):
                    k += 1
                found.add((j, k - 1))
        return found

    gold_spans = spans(gold, lambda j: True)
    pred_spans = spans(pred, lambda j: gold[j] != "[PAD]")
    correct = sum(s in gold_spans and gold[s[0]:s[1] + 1] == pred[s[0]:s[1] + 1] for s in pred_spans)
    p, r = correct / (len(pred_spans) + 1e-9), correct / (len(gold_spans) + 1e-9)
    return p, r, 2 * p * r / (p + r + 1e-9)


# ---------------------------------------------------------------------- learning, keys, prediction file
@pytest.mark.slow
@pytest.mark.parametrize("crf", [False, True], ids=["softmax", "crf"])
def test_fine_tunes_to_high_f1_and_infer_agrees_with_the_report(ner_files, vocab_path, bert_config_path, tmp_path,
                                                                caplog, crf):
    out = tmp_path / "ner.bin"
    caplog.set_level("INFO")
    flags = ["--crf_target"] if crf else []
    ner.finetune_main(_train_args(ner_files, vocab_path, bert_config_path, out, "--test_path", ner_files["noisy"],
                                  *flags))
    reports = _reports(caplog)
    assert len(reports) == 3  # two dev evaluations, then the (noisy) test set with the best model
    assert max(f1 for _, _, f1 in reports[:2]) >= 0.9, reports
    keys = list(load_state_dict(str(out)))
    head = ["output_layer.weight", "output_layer.bias"]
    assert [k for k in keys if not k.startswith(("embedding.", "encoder."))] == (
        head + ["crf.start_transitions", "crf.end_transitions", "crf.transitions"] if crf else head)

    rows = Path(ner_files["noisy"]).read_text(encoding="utf-8").splitlines()[1:]
    nolabel = tmp_path / "nolabel.tsv"
    nolabel.write_text("text_a\n" + "\n".join(r.split("\t")[0] for r in rows) + "\n", encoding="utf-8")
    prediction = tmp_path / "prediction.txt"
    ner.infer_main(["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path", str(nolabel),
                    "--load_model_path", str(out), "--prediction_path", str(prediction), "--label2id_path",
                    ner_files["label2id"], "--batch_size", "7", *flags])
    lines = prediction.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "pred_label" and lines[-1] == "" and len(lines) == len(rows) + 2
    gold = [r.split("\t")[1].split(" ") for r in rows]
    pred = []
    for line, tags in zip(lines[1:], gold):
        assert line.endswith(" ")  # the original wrote each tag followed by a space
        pred.append(line[:-1].split(" "))
        assert len(pred[-1]) == len(tags) and set(pred[-1]) <= set(LABEL2ID)
    expected = reference_scores(gold, pred)
    assert 0.5 < expected[2] < 0.99  # the noise keeps the comparison informative
    assert reports[-1] == pytest.approx(expected, abs=6e-4)  # the report's 3 decimals


def test_inference_refuses_a_model_of_other_labels_and_writes_nothing(ner_files, vocab_path, bert_config_path,
                                                                     tmp_path):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    model = NerTagger(load_model_config(bert_config_path), tokenizer.vocab_size, labels_num=len(LABEL2ID) + 1)
    from tencentpretrain.checkpoint import save_checkpoint

    save_checkpoint(model, str(tmp_path / "ner.bin"))
    prediction = tmp_path / "prediction.txt"
    infer = ["--vocab_path", vocab_path, "--config_path", bert_config_path, "--test_path", ner_files["dev"],
             "--load_model_path", str(tmp_path / "ner.bin"), "--prediction_path", str(prediction)]
    more_labels = tmp_path / "more.json"
    more_labels.write_text(json.dumps({**LABEL2ID, "B-ORG": 5, "I-ORG": 6}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="output_layer"):
        ner.infer_main([*infer, "--label2id_path", str(more_labels)])
    with pytest.raises(CheckpointError, match="crf"):  # a model without a CRF, read as one with
        ner.infer_main([*infer, "--label2id_path", ner_files["label2id"], "--crf_target"])
    assert not list(tmp_path.glob("*prediction.txt*"))


# ---------------------------------------------------------------------- the original's evaluation
def _ids(tags: str, labels: NerLabels) -> list[int]:
    return [labels.label_to_id[t] for t in tags.split()]


@pytest.fixture
def bioes_labels(tmp_path) -> NerLabels:
    path = tmp_path / "bioes.json"
    path.write_text(json.dumps({"O": 0, "B-PER": 1, "I-PER": 2, "E-PER": 3, "S-PER": 4, "B-LOC": 5, "I-LOC": 6,
                                "E-LOC": 7, "S-LOC": 8}), encoding="utf-8")
    return NerLabels.load(str(path))


def test_entities_are_runs_from_a_b_tag_to_the_next_o_or_b_tag(bioes_labels):
    labels = bioes_labels
    assert labels.label_to_id["[PAD]"] == 9 and len(labels) == 10
    tags = _ids("O B-PER I-PER E-PER S-LOC O S-PER B-LOC B-LOC E-LOC I-PER", labels)
    # S- tags start nothing and continue whatever runs; a run ends at O, at a B- tag or at the sentence's end
    assert entity_spans(tags, labels.begin_ids, labels.outside_id) == [(1, 4), (7, 7), (8, 10)]


def test_precision_recall_f1_count_spans_with_identical_tags(bioes_labels):
    labels = bioes_labels
    counts = EntityCounts()
    #                       gold                                        predicted
    counts.add(_ids("B-PER E-PER O B-LOC E-LOC O", labels), _ids("B-PER E-PER O B-LOC E-LOC O", labels), labels)
    counts.add(_ids("B-PER I-PER E-PER O O", labels), _ids("B-PER I-PER I-PER O O", labels), labels)  # tags differ
    counts.add(_ids("O B-LOC E-LOC O", labels), _ids("O B-LOC E-LOC E-LOC", labels), labels)  # span differs
    counts.add(_ids("O O O", labels), _ids("B-PER O B-LOC", labels), labels)  # two spurious entities
    counts.add(_ids("S-PER O B-LOC", labels), _ids("O O O", labels), labels)  # S- is no entity; one missed
    assert (counts.correct, counts.predicted, counts.gold) == (2, 6, 5)
    p, r, f1 = counts.scores()
    assert (p, r) == pytest.approx((2 / 6, 2 / 5)) and f1 == pytest.approx(2 * p * r / (p + r))
    gold = ["B-PER E-PER O B-LOC E-LOC O", "B-PER I-PER E-PER O O", "O B-LOC E-LOC O", "O O O", "S-PER O B-LOC"]
    pred = ["B-PER E-PER O B-LOC E-LOC O", "B-PER I-PER I-PER O O", "O B-LOC E-LOC E-LOC", "B-PER O B-LOC", "O O O"]
    assert counts.scores() == pytest.approx(reference_scores([g.split() for g in gold], [q.split() for q in pred]))
    assert EntityCounts().scores() == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------------- padding, loss
@pytest.mark.parametrize("crf", [False, True], ids=["softmax", "crf"])
def test_padding_and_its_tags_do_not_count(ner_files, vocab_path, bert_config_path, crf):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    labels = NerLabels.load(ner_files["label2id"])
    examples = read_ner(ner_files["dev"], tokenizer, labels, 64)[:6]
    torch.manual_seed(0)
    model = NerTagger(load_model_config(bert_config_path), tokenizer.vocab_size, labels_num=len(labels),
                      crf_target=crf).eval()
    model.init_weights()
    tight = collate_for(tokenizer, labels)(examples)
    width = 64 - tight["src"].shape[1]
    assert width > 0 and (tight["seg"] == 0).any() and (tight["tags"][tight["seg"] == 0] == labels.pad_id).all()
    wide = {"src": F.pad(tight["src"], (0, width), value=tokenizer.pad_id), "seg": F.pad(tight["seg"], (0, width)),
            "tags": F.pad(tight["tags"], (0, width), value=labels.pad_id)}
    noisy_tags = tight["tags"].clone()
    noisy_tags[tight["seg"] == 0] = torch.randint(0, len(LABEL2ID), (int((tight["seg"] == 0).sum()),))
    output = model(tight)
    torch.testing.assert_close(model(wide).loss, output.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model({**tight, "tags": noisy_tags}).loss, output.loss)
    assert model.tag(wide) == model.tag(tight) and [len(t) for t in model.tag(tight)] == [len(e["src"]) for e in
                                                                                        examples]
    # the loss is the original's: mean token cross-entropy over real tokens, or the CRF's mean NLL of log-softmax
    mask = tight["seg"] > 0
    log_probs = F.log_softmax(output.logits, dim=-1)
    if crf:
        expected = -model.crf(log_probs, tight["tags"], mask, reduction="none").mean()
    else:
        expected = -log_probs.gather(2, tight["tags"].unsqueeze(2)).squeeze(2)[mask].mean()
    torch.testing.assert_close(output.loss, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------- reading, bad input
def test_tokens_are_the_space_separated_fields_cut_to_seq_length(vocab_path, tmp_path):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    labels = NerLabels.load(str(_write(tmp_path / "l2i.json", json.dumps(LABEL2ID))))
    path = _write(tmp_path / "a.tsv", "text_a\tlabel\n好 美 Zq 这 差\tB-PER I-PER O O B-LOC\n")
    (example,) = read_ner(str(path), tokenizer, labels, 4)
    vocab = Path(vocab_path).read_text(encoding="utf-8").split("\n")
    assert example["src"] == [vocab.index("好"), vocab.index("美"), vocab.index("[UNK]"), vocab.index("这")]
    assert example["seg"] == [1, 1, 1, 1] and example["tags"] == [1, 2, 0, 0]  # no [CLS]: token i is position i


def test_an_input_longer_than_the_position_table_is_refused(ner_files, vocab_path, bert_config_path, tmp_path):
    long = _write(tmp_path / "long.tsv", "text_a\tlabel\n好 美\tB-PER I-PER\n" + " ".join(["这"] * 70) + "\t"
                  + " ".join(["O"] * 70) + "\n")
    assert json.loads(Path(bert_config_path).read_text())["max_seq_length"] == 64
    with pytest.raises(DataError, match=r"an input of 70 tokens is longer than the model's 64 learned positions "
                                        r".*pass --seq_length 64 or less"):
        ner.finetune_main(_train_args({**ner_files, "train": str(long)}, vocab_path, bert_config_path,
                                      tmp_path / "m.bin", "--epochs_num", "1"))
    assert not (tmp_path / "m.bin").exists()
    ner.finetune_main(_train_args({**ner_files, "train": str(long)}, vocab_path, bert_config_path,
                                  tmp_path / "m.bin", "--epochs_num", "1", "--seq_length", "64"))  # cut: it fits
    assert (tmp_path / "m.bin").exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("line, message", [
    ("好 美 这\tB-PER I-PER B-ORG", r"line 3: the tag 'B-ORG' \(token 3\) is not in .*label2id.json, which has O, B-PER, I-PER"),
    ("好 美 这\tB-PER I-PER", r"line 3: text_a has 3 tokens but label has 2 tags"),
    ("好  美\tB-PER I-PER", r"line 3: text_a has 3 tokens but label has 2 tags"),
    (" \tO", r"line 3: text_a is empty"),
    ("好 美", r"line 3: no 'label' field"),
])
def test_bad_lines_are_named_by_file_and_line_and_nothing_is_saved(ner_files, vocab_path, bert_config_path,
                                                                   tmp_path, line, message):
    bad = _write(tmp_path / "bad.tsv", "text_a\tlabel\n好 美 这\tB-PER I-PER O\n" + line + "\n")
    out = tmp_path / "model.bin"
    with pytest.raises(DataError, match="bad.tsv, " + message):
        ner.finetune_main(_train_args({**ner_files, "train": str(bad)}, vocab_path, bert_config_path, out))
    assert not out.exists()


def test_infer_refuses_an_empty_line_and_writes_nothing(ner_files, vocab_path, bert_config_path, tmp_path):
    tokenizer = build_tokenizer("bert", vocab_path=vocab_path)
    from tencentpretrain.checkpoint import save_checkpoint

    save_checkpoint(NerTagger(load_model_config(bert_config_path), tokenizer.vocab_size,
                              labels_num=len(LABEL2ID) + 1), str(tmp_path / "ner.bin"))
    prediction = tmp_path / "prediction.txt"
    infer = ["--vocab_path", vocab_path, "--config_path", bert_config_path, "--load_model_path",
             str(tmp_path / "ner.bin"), "--prediction_path", str(prediction), "--label2id_path", ner_files["label2id"]]
    # a blank line would shift every later prediction onto the wrong input line
    for text, message in (("text_a\n好 美\n \n这\n", "line 3: blank line"),
                          ("text_a\tlabel\n好 美\tO O\n\t O\n", "line 3: text_a is empty")):
        test = _write(tmp_path / "test.tsv", text)
        with pytest.raises(DataError, match="test.tsv, " + message):
            ner.infer_main([*infer, "--test_path", str(test)])
        assert not list(tmp_path.glob("*prediction.txt*"))
    test = _write(tmp_path / "test.tsv", "text_a\n好 美\n这\n\n\n")  # blank lines at the end are no input
    ner.infer_main([*infer, "--test_path", str(test)])
    assert len(prediction.read_text(encoding="utf-8").splitlines()) == 3


@pytest.mark.parametrize("mapping, message", [
    ({"B-PER": 0, "I-PER": 1}, "there is no 'O' tag"),
    ({"O": 0, "B-PER": 2}, r"the ids must be 0..1, each once"),
    ({"O": 0, "[PAD]": 1}, r"'\[PAD\]' is reserved"),
    ({"O": "0"}, "every id must be an integer"),
    (["O", "B-PER"], "expected a JSON object mapping each tag to its id"),
])
def test_bad_label2id_files_are_refused(tmp_path, mapping, message):
    path = _write(tmp_path / "label2id.json", json.dumps(mapping))
    with pytest.raises(DataError, match="label2id.json: " + message):
        NerLabels.load(str(path))
