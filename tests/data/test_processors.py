"""Golden masks: exactly the response tokens and their end token carry loss."""

from __future__ import annotations

import json

import numpy as np

from tencentpretrain.data.dataset import IndexedDataset
from tencentpretrain.data.loader import collate


def _instances(path):
    ds = IndexedDataset(path)
    return ds, [(ds[i][0].tolist(), None if ds[i][1] is None else ds[i][1].tolist()) for i in range(len(ds))]


def _scored_targets(tokens, mask, seq_length):
    batch = collate([(np.array(tokens), None if mask is None else np.array(mask, dtype=np.uint8))], seq_length, 3)
    return batch, batch.tgt[batch.loss_mask].tolist()


def test_alpaca_plain_golden_mask(build, tok):
    record = {"instruction": "把下面的句子翻译成英文。\\n", "input": "今天天气很好",
              "output": "The weather is nice today."}
    ds, [(tokens, mask)] = _instances(build([record], data_processor="alpaca", seq_length=64))
    prompt = tok.encode("把下面的句子翻译成英文。\n今天天气很好")  # literal \n became a newline
    answer = tok.encode("The weather is nice today.")
    assert tokens == [tok.bos_id, *prompt, *answer, tok.eos_id]
    assert mask == [0] * (1 + len(prompt)) + [2] * (len(answer) + 1)
    batch, scored = _scored_targets(tokens, mask, 64)
    assert scored == [*answer, tok.eos_id]
    # seg: 1 on prompt positions, 2 where the target is a response token, 0 on padding
    n = len(tokens) - 1
    assert batch.seg[0].tolist() == [1] * len(prompt) + [2] * (len(answer) + 1) + [0] * (64 - n)
    assert ds.manifest["options"] == {"seq_length": 64, "prompt_template": "plain", "train_on_prompt": False}


def test_llm_sft_alias_and_train_on_prompt(build, tok):
    record = {"instruction": "问：", "input": "", "output": "答。"}
    ds, [(tokens, mask)] = _instances(build([record], data_processor="llm_sft", train_on_prompt=True))
    assert ds.processor == "alpaca" and ds.manifest["data_processor"] == "llm_sft"
    prompt = tok.encode("问：")
    assert mask == [0] + [1] * len(prompt) + [2] * (len(tokens) - 1 - len(prompt))


def test_alpaca_template_truncation_and_skips(build, tok):
    long_output = "很长的回答。" * 100
    records = [
        {"instruction": "写一段话。", "output": long_output},
        {"instruction": "这是一个非常非常长的提示" * 40, "output": "短"},
        {"instruction": "", "input": "", "output": ""},
        {"instruction": "Say hi.", "output": "hi"},
    ]
    ds, instances = _instances(build(records, data_processor="alpaca", prompt_template="alpaca", seq_length=256))
    counts = ds.manifest["counts"]
    assert counts["skipped"] == {"empty_sample": 1, "prompt_too_long": 1}
    assert counts["truncated"] == 1 and counts["instances"] == 2
    (long_tokens, long_mask), (tokens, mask) = instances
    # cut to seq_length + 1; the cut drops </s>
    assert len(long_tokens) == 257 and long_mask[-1] == 2 and long_tokens[-1] != tok.eos_id
    prompt = tok.encode(
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nSay hi.\n\n### Response:\n"
    )
    assert tokens == [tok.bos_id, *prompt, *tok.encode("hi"), tok.eos_id]
    assert mask == [0] * (1 + len(prompt)) + [2] * (len(tokens) - 1 - len(prompt))


CONVERSATION = {
    "messages": [
        {"role": "system", "content": "你是一个乐于助人的助手。"},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": "北京是哪个国家的首都？"},
        {"role": "assistant", "content": "北京是中国的首都。"},
    ]
}


def _expected_chat(tok):
    """The user_bot layout, built by hand."""
    p1 = tok.encode("你是一个乐于助人的助手。\nUser: 你好\nBot:")
    a1 = tok.encode("你好！")
    p2 = tok.encode("\nUser: 北京是哪个国家的首都？\nBot:")
    a2 = tok.encode("北京是中国的首都。")
    tokens = [tok.bos_id, *p1, *a1, tok.eos_id, *p2, *a2, tok.eos_id]
    mask = [0] * (1 + len(p1)) + [2] * (len(a1) + 1) + [0] * len(p2) + [2] * (len(a2) + 1)
    return tokens, mask, [*a1, tok.eos_id, *a2, tok.eos_id]


def test_chat_golden_mask(build, tok):
    ds, [(tokens, mask)] = _instances(build([CONVERSATION], data_processor="chat", seq_length=128))
    want_tokens, want_mask, want_scored = _expected_chat(tok)
    assert tokens == want_tokens and mask == want_mask
    assert _scored_targets(tokens, mask, 128)[1] == want_scored
    assert ds.manifest["options"]["prompt_template"] == "user_bot"


def test_chat_sharegpt_equals_openai(build):
    role = {"system": "system", "user": "human", "assistant": "gpt"}
    share = {"conversations": [{"from": role[m["role"]], "value": m["content"]} for m in CONVERSATION["messages"]]}
    a = _instances(build([CONVERSATION], name="a.pt", data_processor="chat"))[1]
    b = _instances(build([share], name="b.pt", data_processor="chat"))[1]
    assert a == b


def test_chat_cut_at_turn_boundary(build, tok):
    tokens, mask, _ = _expected_chat(tok)
    first_turn_end = tokens.index(tok.eos_id) + 1
    seq_length = len(tokens) - 3  # the second answer does not fit
    ds, [(cut, cut_mask)] = _instances(build([CONVERSATION], data_processor="chat", seq_length=seq_length))
    assert cut == tokens[:first_turn_end] and cut_mask == mask[:first_turn_end]
    assert ds.manifest["counts"]["truncated"] == 1


def test_chat_skips_and_trailing_user_turn(build, tok):
    records = [
        {"messages": [{"role": "user", "content": "只有问题"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                      {"role": "user", "content": "dangling"}]},
        {"system": "Be brief.", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
    ]
    ds, instances = _instances(build(records, data_processor="chat"))
    assert ds.manifest["counts"]["skipped"] == {"no_assistant_turn": 1}
    assert instances[0][0] == [tok.bos_id, *tok.encode("User: hi\nBot:"), *tok.encode("hello"), tok.eos_id]
    assert instances[1][0][:len(tok.encode("Be brief.\nUser: hi\nBot:")) + 1] == [
        tok.bos_id, *tok.encode("Be brief.\nUser: hi\nBot:")
    ]


def test_lm_chunks_and_counts(build, tok):
    text = "北京是中国的首都，也是一座历史悠久的文化名城。"
    ids = [tok.bos_id, *tok.encode(text), tok.eos_id]
    seq_length = 7
    lines = [text, "", "   "]
    ds, instances = _instances(build(lines, seq_length=seq_length))
    chunks = [ids[i:i + seq_length + 1] for i in range(0, len(ids), seq_length + 1)]
    kept = [c for c in chunks if len(c) > 1]
    assert [t for t, _ in instances] == kept and all(m is None for _, m in instances)
    counts = ds.manifest["counts"]
    assert counts["skipped"].get("empty_line") == 2
    assert counts["skipped"].get("empty_loss", 0) == len(chunks) - len(kept)
    assert counts["tokens"] == sum(map(len, kept)) and counts["loss_tokens"] == sum(len(c) - 1 for c in kept)


def test_lm_partial_chunk_scores_no_pad(build, tok):
    ds, [(tokens, mask)] = _instances(build(["你好"], seq_length=16))
    batch, scored = _scored_targets(tokens, mask, 16)
    assert scored == tokens[1:]  # ends with </s>; no PAD target after it
    assert batch.loss_mask.sum() == len(tokens) - 1 == (batch.seg > 0).sum()


def test_lm_json_and_llm_pretrain(build, tok):
    lines = [{"text": "第一篇。"}, {"text": "第二篇。"}]
    a = _instances(build(lines, name="a.pt", json_format_corpus=True))[1]
    b = _instances(build(lines, name="b.pt", data_processor="llm_pretrain"))[1]
    c = _instances(build(["第一篇。", "第二篇。"], name="c.pt"))[1]
    assert a == b == c


def test_full_sentences_packs_across_documents(build, tok):
    docs = ["第一篇文章。", "第二篇文章比较长一些。", "第三篇。"]
    stream = [t for d in docs for t in (tok.bos_id, *tok.encode(d), tok.eos_id)]
    ds, instances = _instances(build(docs, seq_length=5, full_sentences=True))
    chunks = [stream[i:i + 6] for i in range(0, len(stream), 6)]
    assert [t for t, _ in instances] == [c for c in chunks if len(c) > 1]
    assert ds.manifest["counts"]["documents"] == 3


def test_manifest_records_the_tokenizer(build):
    ds = IndexedDataset(build(["文本"]))
    info = ds.manifest["tokenizer"]
    assert info["files"][0]["path"] == "tiny_spm.model" and len(info["files"][0]["sha256"]) == 64
    assert (info["bos_id"], info["eos_id"], info["pad_id"]) == (1, 2, 3)
    assert ds.manifest["token_dtype"] == "<u2"
    assert json.loads((ds.path / "manifest.json").read_text())["format_version"] == 1
