"""The original's small scripts on a tiny BERT checkpoint: each output is checked against numbers computed here
directly from the weights or the model (means, rows, hidden states, cosines, logits)."""

from __future__ import annotations

import runpy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tencentpretrain.checkpoint import load_state_dict, save_checkpoint
from tencentpretrain.config import load_model_config
from tencentpretrain.evaluation.word_vectors import whiten
from tencentpretrain.models.model import build_model
from tencentpretrain.tokenizers import build_tokenizer
from tests.helpers import REPO_ROOT

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "我", "你", "他", "爱", "中", "国", "北", "京", "天", "气",
          "好", "很", "的", "是", "人"]
SENTENCES = ["我爱中国", "北京天气很好", "他是中国人", "你好"]


def script(name: str):
    return runpy.run_path(f"{REPO_ROOT}/scripts/{name}.py", run_name="small_scripts_test")["main"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """(directory, model, vocab path, common flags) of a tiny random BERT with an MLM head."""
    root = tmp_path_factory.mktemp("bert")
    (root / "vocab.txt").write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    torch.manual_seed(3)
    model = build_model(load_model_config(f"{REPO_ROOT}/models/bert/tiny_config.json"), len(TOKENS)).eval()
    save_checkpoint(model, str(root / "model.bin"))
    flags = ["--config_path", f"{REPO_ROOT}/models/bert/tiny_config.json", "--load_model_path", str(root / "model.bin"),
             "--vocab_path", str(root / "vocab.txt"), "--tokenizer", "bert", "--device", "cpu"]
    (root / "sentences.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return root, model, str(root / "vocab.txt"), flags


def _encode(root, text):
    tokenizer = build_tokenizer("bert", vocab_path=str(root / "vocab.txt"))
    return [tokenizer.bos_id, *tokenizer.encode(text), tokenizer.eos_id]


def test_average_models_is_the_mean(tmp_path):
    states = [{"w": torch.randn(3, 4), "b": torch.randn(4).half(), "step": torch.tensor([5])} for _ in range(3)]
    paths = []
    for i, state in enumerate(states):
        save_checkpoint(state, str(tmp_path / f"m{i}.bin"))
        paths.append(str(tmp_path / f"m{i}.bin"))
    script("average_models")(["--model_list_path", *paths, "--output_model_path", str(tmp_path / "avg.safetensors")])
    avg = load_state_dict(str(tmp_path / "avg.safetensors"))
    torch.testing.assert_close(avg["w"], torch.stack([s["w"] for s in states]).mean(0), rtol=0, atol=1e-7)
    expected_b = torch.stack([s["b"].double() for s in states]).mean(0).half()
    assert avg["b"].dtype == torch.float16 and torch.equal(avg["b"], expected_b)
    assert torch.equal(avg["step"], torch.tensor([5]))


@pytest.mark.slow  # a subprocess: the exit status and the one-line error
def test_average_models_refuses_other_models(tmp_path):
    save_checkpoint({"w": torch.zeros(3, 4)}, str(tmp_path / "a.bin"))
    save_checkpoint({"w": torch.zeros(4, 4)}, str(tmp_path / "b.bin"))
    result = subprocess.run([sys.executable, f"{REPO_ROOT}/scripts/average_models.py", "--model_list_path",
                             str(tmp_path / "a.bin"), str(tmp_path / "b.bin"), "--output_model_path",
                             str(tmp_path / "avg.bin")], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "w: shape (4, 4)" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "avg.bin").exists()


def test_extract_embeddings_writes_each_row(bert, tmp_path):
    root, model, vocab, _ = bert
    out = tmp_path / "emb.txt"
    script("extract_embeddings")(["--load_model_path", str(root / "model.bin"), "--vocab_path", vocab,
                                  "--word_embedding_path", str(out)])
    lines = out.read_text(encoding="utf-8").splitlines()
    table = model.embedding.word.embedding.weight.detach()
    assert lines[0] == f"{len(TOKENS)} {table.shape[1]}"
    for i, line in enumerate(lines[1:]):
        word, *values = line.split(" ")
        assert word == TOKENS[i]
        assert torch.equal(torch.tensor([float(v) for v in values]), table[i])


def test_topn_words_indep_ranks_by_cosine(bert, tmp_path, capsys):
    root, model, vocab, _ = bert
    (tmp_path / "words.txt").write_text("中\n", encoding="utf-8")
    report = script("topn_words_indep")(["--load_model_path", str(root / "model.bin"), "--vocab_path", vocab,
                                         "--test_path", str(tmp_path / "words.txt"), "--topn", "3"])
    table = model.embedding.word.embedding.weight.detach()
    sims = F.cosine_similarity(table[9:10], table)
    sims[9] = -2
    best = sims.argsort(descending=True)[:3].tolist()
    lines = report.splitlines()
    assert lines[0] == "Target word: 中"
    assert [line.split("\t")[0] for line in lines[1:4]] == [TOKENS[i] for i in best]
    assert [float(line.split("\t")[1]) for line in lines[1:4]] == pytest.approx(sims[best].tolist(), abs=1e-6)


@pytest.mark.slow  # a subprocess: the exit status and the one-line error
def test_topn_words_indep_unknown_word_is_an_error(bert, tmp_path):
    root, _, vocab, _ = bert
    (tmp_path / "words.txt").write_text("中\n猫\n", encoding="utf-8")
    result = subprocess.run([sys.executable, f"{REPO_ROOT}/scripts/topn_words_indep.py", "--load_model_path",
                             str(root / "model.bin"), "--vocab_path", vocab, "--test_path",
                             str(tmp_path / "words.txt")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "words.txt:2: '猫' is not in the vocabulary" in result.stderr


def test_extract_features_equal_the_models_hidden_states(bert, tmp_path):
    root, model, _, flags = bert
    for pooling in ("first", "mean"):
        out = tmp_path / f"features_{pooling}.pt"
        script("extract_features")([*flags, "--test_path", str(root / "sentences.txt"), "--prediction_path",
                                    str(out), "--pooling", pooling, "--batch_size", "3"])
        features = torch.load(out)
        with torch.no_grad():
            expected = []
            for text in SENTENCES:  # one sentence at a time: no padding
                hidden = model.hidden_states(torch.tensor([_encode(root, text)]))[0]  # (T, H)
                expected.append(hidden[0] if pooling == "first" else hidden.mean(0))
        torch.testing.assert_close(features, torch.stack(expected), rtol=1e-5, atol=1e-5)
    out = tmp_path / "white.pt"
    script("extract_features")([*flags, "--test_path", str(root / "sentences.txt"), "--prediction_path", str(out),
                                "--whitening_size", "2"])
    white = torch.load(out)
    assert white.shape == (4, 2)
    torch.testing.assert_close(white.norm(dim=1), torch.ones(4, dtype=white.dtype))


def test_whitening_decorrelates():
    torch.manual_seed(0)
    vectors = torch.randn(200, 3) @ torch.tensor([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]])
    u, s, _ = torch.linalg.svd(torch.cov(vectors.double().T))
    raw = (vectors.double() - vectors.double().mean(0)) @ (u / s.sqrt())
    torch.testing.assert_close(torch.cov(raw.T), torch.eye(3, dtype=torch.float64))  # what whiten normalises
    torch.testing.assert_close(whiten(vectors, None), raw / raw.norm(dim=1, keepdim=True))


def test_cloze_test_reports_the_models_top_predictions(bert, tmp_path):
    root, model, _, flags = bert
    out = tmp_path / "cloze.txt"
    text = script("cloze_test")([*flags, "--test_path", str(root / "sentences.txt"), "--prediction_path", str(out),
                                 "--topn", "3", "--seed", "5"])
    assert out.read_text(encoding="utf-8") == text
    blocks = text.strip("\n").split("\n\n")
    assert len(blocks) == len(SENTENCES)
    for sentence, block in zip(SENTENCES, blocks):
        shown, predicted, answer = block.split("\n")
        ids = _encode(root, sentence)
        pieces = [TOKENS[j] for j in ids]
        # the masked position: the one whose replacement by [MASK] gives the sentence shown
        candidates = [p for p in range(1, len(ids)) if "".join(pieces[:p] + ["[MASK]"] + pieces[p + 1:]) == shown]
        assert len(candidates) >= 1, shown
        p = candidates[0]
        assert answer == f"Correct answer: {pieces[p]}"
        src = torch.tensor([ids[:p] + [4] + ids[p + 1:]])
        with torch.no_grad():
            best = model.logits(src)[0, p].topk(3).indices.tolist()
        assert predicted == "Predicted answer: " + " ".join(TOKENS[i] for i in best)


def test_topn_words_dep_uses_contextual_hidden_states(bert, tmp_path):
    _, model, vocab, flags = bert
    (tmp_path / "test.tsv").write_text("中\t我爱中国\n他\t我爱中国\n", encoding="utf-8")
    report = script("topn_words_dep")([*flags, "--cand_vocab_path", vocab, "--test_path", str(tmp_path / "test.tsv"),
                                       "--topn", "2", "--batch_size", "4"])
    tokenizer = build_tokenizer("bert", vocab_path=vocab)
    ids = tokenizer.encode("我爱中国")
    position = ids.index(9)
    with torch.no_grad():
        own = model.hidden_states(torch.tensor([ids]))[0, position]
        sims = {}
        for cand in range(len(TOKENS)):
            if cand == 9:
                continue
            swapped = list(ids)
            swapped[position] = cand
            sims[cand] = F.cosine_similarity(own, model.hidden_states(torch.tensor([swapped]))[0, position], dim=0)
    best = sorted(sims, key=lambda c: -sims[c])[:2]
    lines = report.splitlines()
    assert lines[:2] == ["Original sentence: 我爱中国", "Target word: 中"]
    assert [line.split("\t")[0] for line in lines[2:4]] == [TOKENS[c] for c in best]
    assert [float(line.split("\t")[1]) for line in lines[2:4]] == pytest.approx([float(sims[c]) for c in best],
                                                                                  abs=1e-5)
    assert lines[4:] == ["Original sentence: 我爱中国", "Target word: 他", "The target word is not in the sentence."]


def test_dynamic_vocab_adapter_moves_rows_to_new_ids(bert, tmp_path):
    root, _, vocab, _ = bert
    new_tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "国", "中", "猫", "我"]
    (tmp_path / "new.txt").write_text("\n".join(new_tokens) + "\n", encoding="utf-8")
    script("dynamic_vocab_adapter")(["--old_model_path", str(root / "model.bin"), "--old_vocab_path", vocab,
                                     "--new_vocab_path", str(tmp_path / "new.txt"), "--new_model_path",
                                     str(tmp_path / "new.bin")])
    old, new = load_state_dict(str(root / "model.bin")), load_state_dict(str(tmp_path / "new.bin"))
    for key in ("embedding.word.embedding.weight", "target.mlm.linear_2.weight", "target.mlm.linear_2.bias"):
        assert new[key].shape[0] == len(new_tokens)
        for new_id, token in enumerate(new_tokens):
            if token in TOKENS:
                assert torch.equal(new[key][new_id], old[key][TOKENS.index(token)]), (key, token)
    assert new["target.mlm.linear_2.bias"][7] == 0  # 猫 is new: zero bias, N(0, 0.02) rows
    assert 0 < new["embedding.word.embedding.weight"][7].std() < 0.1
    # tied head stays tied; everything else is unchanged
    assert torch.equal(new["target.mlm.linear_2.weight"], new["embedding.word.embedding.weight"])
    for key in old:
        if key not in ("embedding.word.embedding.weight", "target.mlm.linear_2.weight", "target.mlm.linear_2.bias"):
            assert torch.equal(new[key], old[key]), key


def test_diff_vocab(tmp_path):
    (tmp_path / "a.txt").write_text("a\nb\nc\n\nd 5\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("c\nd\ne\n", encoding="utf-8")
    report = script("diff_vocab")(["--vocab_1", str(tmp_path / "a.txt"), "--vocab_2", str(tmp_path / "b.txt")])
    assert report.splitlines()[1:] == [f"vocab_2: {tmp_path / 'b.txt'}, size: 3", "vocab_1 - vocab_2 = 2",
                                       "vocab_2 - vocab_1 = 1", "vocab_1 & vocab_2 = 2"]
    assert report.splitlines()[0].endswith("size: 4")


def test_a_vocabulary_larger_than_the_checkpoint_is_refused(bert, tmp_path):
    from tencentpretrain.errors import CheckpointError, ConfigError

    root, _, _, _ = bert
    (tmp_path / "big.txt").write_text("\n".join([*TOKENS, "猫", "狗"]) + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="has 20 rows but the old vocabulary has 22 tokens"):
        script("dynamic_vocab_adapter")(["--old_model_path", str(root / "model.bin"), "--old_vocab_path",
                                         str(tmp_path / "big.txt"), "--new_vocab_path", str(tmp_path / "big.txt"),
                                         "--new_model_path", str(tmp_path / "new.bin")])
    with pytest.raises(ConfigError, match="the embedding has 20 rows but the vocabulary has 22 tokens"):
        script("extract_embeddings")(["--load_model_path", str(root / "model.bin"), "--vocab_path",
                                      str(tmp_path / "big.txt"), "--word_embedding_path", str(tmp_path / "e.txt")])
    assert not (tmp_path / "new.bin").exists() and not (tmp_path / "e.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["big.txt"]  # no temporary left behind
