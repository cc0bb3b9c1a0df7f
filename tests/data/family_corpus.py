"""A tiny mixed Chinese/English corpus and a BERT vocabulary covering it, for the bert/mlm/t5 processor tests."""

from __future__ import annotations

from pathlib import Path

from tencentpretrain.tokenizers.wordpiece import basic_tokenize

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"<extra_id_{i}>" for i in range(20)]

DOCUMENTS = [
    ["北京是中国的首都。", "长城在北京的北边。", "很多人每年去看长城。"],
    ["the cat sat on the mat.", "the dog ran after the cat.", "then both of them slept."],
    ["我们今天学习自然语言处理。", "机器翻译是一个重要的任务。", "the transformer model works well."],
    ["上海是一个大城市。", "上海有很多高楼。"],
    ["a small model can learn simple patterns.", "training on a tiny corpus is fast.", "the loss should fall."],
    ["春天来了，花开了。", "小鸟在树上唱歌。", "孩子们在公园里玩。", "天气很好。"],
]


def sentences() -> list[str]:
    return [s for doc in DOCUMENTS for s in doc]


def write_vocab(path: Path) -> Path:
    """Specials, the sentinels, then every basic-tokenized word of the corpus (CJK characters one by one)."""
    words: list[str] = []
    for sentence in sentences():
        for word in basic_tokenize(sentence, do_lower_case=True):
            if word not in words:
                words.append(word)
    path.write_text("\n".join(SPECIALS + words + ["##s", "##ing"]) + "\n", encoding="utf-8")
    return path


def write_documents(path: Path, repeat: int = 1) -> Path:
    """The original bert format: one sentence per line, a blank line after each document."""
    text = "".join("\n".join(doc) + "\n\n" for doc in DOCUMENTS * repeat)
    path.write_text(text, encoding="utf-8")
    return path


def write_lines(path: Path, repeat: int = 1) -> Path:
    """One document per line (mlm, t5)."""
    path.write_text("".join(" ".join(doc) + "\n" for doc in DOCUMENTS * repeat), encoding="utf-8")
    return path
