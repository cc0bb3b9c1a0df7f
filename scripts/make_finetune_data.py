"""Write the project's fine-tuning data under datasets/: Chinese review sentiment and named entities.

    python scripts/make_finetune_data.py            # (re)write datasets/review_sentiment and datasets/ner_zh
    python scripts/make_finetune_data.py --check    # exit status 1 if datasets/ differs from what would be written

Everything is written for this project from the word lists and templates below (no text comes from other
datasets), seeded, so the output is byte-identical on every run (tests/test_finetune_data.py checks it). The formats
are the original TencentPretrain's: ChnSentiCorp-style TSV (``label<TAB>text_a``) for run_classifier.py and
MSRA-NER-style TSV (``text_a<TAB>label``, characters and tags separated by spaces) plus label2id.json for run_ner.py.
The sets are small so that a tiny BERT learns them on a CPU in a minute; datasets/README.md is the data card.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

from tencentpretrain.cli import run

logger = logging.getLogger("make_finetune_data")

SEED = 20241207
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "datasets"
SPLITS = (("train", 1200), ("dev", 300), ("test", 300))

# ============================================================================================== reviews
# subject -> aspect -> (positive remarks, negative remarks)
REVIEW_KINDS: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    "这本书": {
        "情节": (["很精彩", "引人入胜", "环环相扣"], ["拖沓无聊", "平淡乏味", "老套重复"]),
        "文笔": (["细腻动人", "清新优美"], ["啰嗦空洞", "生硬做作"]),
        "翻译": (["流畅自然", "准确传神"], ["生硬别扭", "错误很多"]),
        "装帧": (["很精美", "大方结实"], ["很粗糙", "一翻就散"]),
        "人物": (["栩栩如生", "个性鲜明"], ["单薄空洞", "脸谱化"]),
    },
    "这家酒店": {
        "服务": (["非常周到", "热情细致"], ["态度很差", "敷衍了事"]),
        "房间": (["干净整洁", "宽敞明亮"], ["又脏又乱", "又小又暗"]),
        "早餐": (["丰富可口", "品种很多"], ["难以下咽", "冷冰冰的"]),
        "位置": (["交通方便", "离地铁很近"], ["偏僻难找", "打车都难"]),
        "隔音": (["很好", "安静舒适"], ["很差", "吵得睡不着"]),
    },
    "这家餐厅": {
        "味道": (["特别好吃", "新鲜地道"], ["咸得要命", "不太新鲜"]),
        "上菜": (["很快", "及时"], ["慢得出奇", "等了一个小时"]),
        "环境": (["优雅舒服", "安静干净"], ["嘈杂拥挤", "油腻脏乱"]),
        "价格": (["实惠公道", "很划算"], ["贵得离谱", "偏高"]),
        "分量": (["很足", "实在"], ["少得可怜", "不够吃"]),
    },
    "这部手机": {
        "屏幕": (["清晰细腻", "色彩鲜艳"], ["经常闪烁", "模糊发灰"]),
        "电池": (["很耐用", "充电很快"], ["掉电飞快", "鼓包了"]),
        "系统": (["流畅稳定", "简洁好用"], ["总是卡顿", "广告太多"]),
        "拍照": (["效果出色", "夜景清楚"], ["模糊不清", "偏色严重"]),
        "做工": (["扎实精致", "手感很好"], ["松松垮垮", "缝隙很大"]),
    },
    "这部电影": {
        "剧情": (["扣人心弦", "紧凑流畅"], ["漏洞百出", "拖泥带水"]),
        "演技": (["真实到位", "自然细腻"], ["浮夸做作", "面无表情"]),
        "配乐": (["动听感人", "恰到好处"], ["吵闹刺耳", "格格不入"]),
        "画面": (["美轮美奂", "大气精致"], ["粗制滥造", "灰暗模糊"]),
        "结局": (["出人意料", "值得回味"], ["草草收场", "莫名其妙"]),
    },
}
POSITIVE_VERDICTS = ["非常满意", "强烈推荐", "下次还会再来", "物超所值", "给五星好评", "值得一试", "总体很不错"]
NEGATIVE_VERDICTS = ["非常失望", "不推荐", "再也不会来了", "浪费钱", "给差评", "后悔了", "总体很糟糕"]
OPENERS = ["", "说实话，", "总的来说，", "第一次体验，", "朋友推荐的，", "买来一周了，", "周末去的，"]


def review(rng: random.Random, label: int) -> str:
    """One review whose overall sentiment is ``label`` (1 positive). Half end with a verdict; a third concede a
    point of the other sentiment first (``虽然 ... 但是 ...``), so the label is not a bag of words."""
    subject = rng.choice(sorted(REVIEW_KINDS))
    aspects = REVIEW_KINDS[subject]
    first, second = rng.sample(sorted(aspects), 2)

    def remark(aspect: str, positive: bool) -> str:
        return rng.choice(aspects[aspect][0 if positive else 1])

    verdict = rng.choice(POSITIVE_VERDICTS if label else NEGATIVE_VERDICTS) if rng.random() < 0.5 else ""
    if rng.random() < 1 / 3:
        body = f"{subject}虽然{first}{remark(first, not label)}，但是{second}{remark(second, bool(label))}"
    else:
        body = f"{subject}的{first}{remark(first, bool(label))}，{second}也{remark(second, bool(label))}"
    return f"{rng.choice(OPENERS)}{body}{'，' + verdict if verdict else ''}。"


def review_rows(rng: random.Random, n: int) -> list[tuple[int, str]]:
    rows, seen = [], set()
    while len(rows) < n:
        label = rng.randint(0, 1)
        text = review(rng, label)
        if text not in seen:
            seen.add(text)
            rows.append((label, text))
    return rows


# ============================================================================================== entities
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红兰飞建国志文斌宇浩凯鹏晨欣怡雪梅琳"
PLACES = ["北京", "上海", "天津", "重庆", "杭州", "南京", "广州", "深圳", "成都", "武汉", "西安", "长沙", "郑州",
          "济南", "青岛", "大连", "沈阳", "哈尔滨", "昆明", "贵阳", "南宁", "福州", "厦门", "合肥", "南昌", "太原",
          "石家庄", "兰州", "西宁", "银川", "拉萨", "乌鲁木齐", "呼和浩特", "海口", "苏州", "无锡", "宁波", "温州"]
ORG_SUFFIXES = ["大学", "第一中学", "人民医院", "图书馆", "博物馆", "科技公司", "银行分行", "电视台", "足球俱乐部"]
ENTITY_TEMPLATES = [
    "{PER}在{ORG}工作了三年。", "{PER}昨天从{LOC}来到{LOC}。", "{ORG}今年招收了两百名新生。",
    "记者在{LOC}采访了{PER}。", "{PER}和{PER}一起参观了{ORG}。", "{LOC}的冬天比{LOC}冷得多。",
    "{ORG}位于{LOC}市中心。", "{PER}说，{LOC}的变化很大。", "今年春天，{PER}去{LOC}看望了父母。",
    "{ORG}的代表{PER}发表了讲话。", "据{ORG}介绍，{LOC}今年游客增多。", "{PER}毕业于{ORG}。",
]
LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-ORG", "I-ORG"]


def person(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))


def organisation(rng: random.Random) -> str:
    return rng.choice(PLACES) + rng.choice(ORG_SUFFIXES)


ENTITY_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "PER": person, "LOC": lambda rng: rng.choice(PLACES), "ORG": organisation,
}


def tagged_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """Characters of one sentence and their BIO tags."""
    template = rng.choice(ENTITY_TEMPLATES)
    chars: list[str] = []
    tags: list[str] = []
    rest = template
    while rest:
        start = rest.find("{")
        if start < 0:
            start = len(rest)
        chars += list(rest[:start])
        tags += ["O"] * start
        if start == len(rest):
            break
        end = rest.index("}", start)
        kind = rest[start + 1:end]
        entity = ENTITY_MAKERS[kind](rng)
        chars += list(entity)
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
        rest = rest[end + 1:]
    return chars, tags


# ============================================================================================== files
def dataset_files() -> dict[str, str]:
    """{relative path: content} of everything this script writes."""
    rng = random.Random(SEED)
    files: dict[str, str] = {}
    for split, n in SPLITS:
        rows = review_rows(rng, n)
        files[f"review_sentiment/{split}.tsv"] = "label\ttext_a\n" + "".join(f"{y}\t{t}\n" for y, t in rows)
        if split == "test":
            files["review_sentiment/test_nolabel.tsv"] = "text_a\n" + "".join(f"{t}\n" for _, t in rows)
    for split, n in SPLITS:
        sentences = [tagged_sentence(rng) for _ in range(n)]
        files[f"ner_zh/{split}.tsv"] = "text_a\tlabel\n" + "".join(
            f"{' '.join(c)}\t{' '.join(t)}\n" for c, t in sentences)
        if split == "test":
            files["ner_zh/test_nolabel.tsv"] = "text_a\n" + "".join(f"{' '.join(c)}\n" for c, _ in sentences)
    files["ner_zh/label2id.json"] = json.dumps({t: i for i, t in enumerate(LABELS)}, ensure_ascii=False) + "\n"
    return files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=str(DEFAULT_OUTPUT), help="where to write (default: datasets/)")
    parser.add_argument("--check", action="store_true", help="only compare; exit status 1 when a file differs")
    args = parser.parse_args(argv)
    from tencentpretrain.atomic import write_text

    stale = []
    for name, content in dataset_files().items():
        path = Path(args.output_dir) / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != content:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(str(path), content)
        logger.info("wrote %s", path)
    if stale:
        raise SystemExit(f"stale or missing under {args.output_dir}: {', '.join(stale)}; "
                         "run python scripts/make_finetune_data.py")


if __name__ == "__main__":
    run(main)
