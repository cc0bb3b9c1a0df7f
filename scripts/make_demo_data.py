"""Write the project's demo data under data/: a Chinese corpus, instruction samples and conversations.

    python scripts/make_demo_data.py                  # (re)write data/zh_corpus.txt, instructions.jsonl, ...
    python scripts/make_demo_data.py --check          # exit status 1 if data/ differs from what would be written

Everything is written for this project. Documents are composed from the fact tables below (common knowledge in
our own words) and sentence templates, plus the hand-written texts in scripts/demo_data/. The output depends only on
this file, those texts and SEED, so it is byte-identical on every run (tests/test_demo_data.py checks it).
The tables are small on purpose: a tiny model pretrained for minutes on 2 CPU cores must see every fact several
times, in the same wording as the instruction answers, to answer them recognisably. data/README.md is the data card.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tencentpretrain.cli import run

logger = logging.getLogger("make_demo_data")

SEED = 20240607
SOURCES = Path(__file__).resolve().parent / "demo_data"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "data"
SYSTEM_PROMPT = "你是一个乐于助人的中文助手，回答要简洁准确。"

Record = dict[str, str]
Conversation = dict[str, list[dict[str, str]]]


# ============================================================================================== fact tables
@dataclass(frozen=True)
class Province:
    name: str  # full name, e.g. 浙江省
    short: str  # 简称
    kind: str  # 省 / 自治区 / 直辖市 / 特别行政区
    capital: str  # 省会 or 首府; "" for municipalities and SARs
    region: str  # 华北, 东北, 华东, 华中, 华南, 西南, 西北
    sights: tuple[str, str]
    food: str
    note: str  # one sentence, no subject: "地处长江下游，..."


PROVINCES = (
    Province("北京市", "京", "直辖市", "", "华北", ("故宫", "长城"), "北京烤鸭", "是中国的首都，也是全国的政治和文化中心。"),
    Province("天津市", "津", "直辖市", "", "华北", ("天津之眼", "五大道"), "煎饼果子", "位于渤海之滨，海河穿城而过，是北方重要的港口城市。"),
    Province("河北省", "冀", "省", "石家庄", "华北", ("承德避暑山庄", "赵州桥"), "驴肉火烧", "环绕着北京和天津，平原辽阔，是重要的小麦产区。"),
    Province("山西省", "晋", "省", "太原", "华北", ("平遥古城", "五台山"), "刀削面", "地处黄土高原，煤炭资源丰富，保存着许多古老的建筑。"),
    Province("内蒙古自治区", "内蒙古", "自治区", "呼和浩特", "华北", ("呼伦贝尔草原", "响沙湾"), "手把肉", "横跨中国北方，有辽阔的草原，是蒙古族聚居的地方。"),
    Province("辽宁省", "辽", "省", "沈阳", "东北", ("沈阳故宫", "大连海滨"), "海鲜", "位于东北的南部，南面临海，是重要的老工业基地。"),
    Province("吉林省", "吉", "省", "长春", "东北", ("长白山天池", "松花湖"), "延边冷面", "森林茂密，长春的汽车工业很有名。"),
    Province("黑龙江省", "黑", "省", "哈尔滨", "东北", ("冰雪大世界", "五大连池"), "锅包肉", "是中国最北的省，冬天漫长而寒冷，以冰雪闻名。"),
    Province("上海市", "沪", "直辖市", "", "华东", ("外滩", "东方明珠"), "小笼包", "位于长江入海口，是中国最大的经济中心城市之一。"),
    Province("江苏省", "苏", "省", "南京", "华东", ("苏州园林", "中山陵"), "盐水鸭", "地处长江下游，河湖密布，自古就是富庶的鱼米之乡。"),
    Province("浙江省", "浙", "省", "杭州", "华东", ("西湖", "乌镇"), "西湖醋鱼", "山清水秀，经济发达，有许多美丽的水乡古镇。"),
    Province("安徽省", "皖", "省", "合肥", "华东", ("黄山", "宏村"), "臭鳜鱼", "横跨长江和淮河，白墙黑瓦的徽派建筑很有特色。"),
    Province("福建省", "闽", "省", "福州", "华东", ("武夷山", "福建土楼"), "佛跳墙", "位于东南沿海，山多地少，隔着海峡与台湾相望。"),
    Province("江西省", "赣", "省", "南昌", "华东", ("庐山", "鄱阳湖"), "瓦罐汤", "森林覆盖率高，境内的鄱阳湖是中国最大的淡水湖。"),
    Province("山东省", "鲁", "省", "济南", "华东", ("泰山", "曲阜孔庙"), "煎饼", "是孔子的故乡，东部伸入大海，形成了山东半岛。"),
    Province("台湾省", "台", "省", "台北", "华东", ("日月潭", "阿里山"), "凤梨酥", "是中国最大的岛屿，位于东南海上，物产丰富。"),
    Province("河南省", "豫", "省", "郑州", "华中", ("少林寺", "龙门石窟"), "烩面", "位于中原，是中华文明的重要发源地，历史上有许多朝代在这里建都。"),
    Province("湖北省", "鄂", "省", "武汉", "华中", ("黄鹤楼", "三峡大坝"), "热干面", "长江横贯全省，湖泊众多，被称为“千湖之省”。"),
    Province("湖南省", "湘", "省", "长沙", "华中", ("张家界", "岳阳楼"), "剁椒鱼头", "地处长江中游以南，洞庭湖在它的北部，这里的人爱吃辣。"),
    Province("广东省", "粤", "省", "广州", "华南", ("广州塔", "丹霞山"), "早茶点心", "位于中国大陆的南端，珠江三角洲经济发达。"),
    Province("广西壮族自治区", "桂", "自治区", "南宁", "华南", ("桂林山水", "北海银滩"), "螺蛳粉", "是壮族聚居的地方，奇特的石灰岩山峰造就了秀丽的山水。"),
    Province("海南省", "琼", "省", "海口", "华南", ("亚龙湾", "五指山"), "文昌鸡", "是一个热带海岛省份，四季温暖，到处都是椰子树。"),
    Province("香港特别行政区", "港", "特别行政区", "", "华南", ("维多利亚港", "太平山"), "菠萝包", "是国际金融中心，高楼林立，海港的夜景很美。"),
    Province("澳门特别行政区", "澳", "特别行政区", "", "华南", ("大三巴牌坊", "妈阁庙"), "葡式蛋挞", "面积很小，中西文化在这里交融。"),
    Province("重庆市", "渝", "直辖市", "", "西南", ("洪崖洞", "解放碑"), "火锅", "建在长江和嘉陵江边的山坡上，道路高低起伏，被称为“山城”。"),
    Province("四川省", "川", "省", "成都", "西南", ("九寨沟", "峨眉山"), "麻婆豆腐", "地处西南，成都平原被称为“天府之国”，这里是大熊猫的故乡。"),
    Province("贵州省", "黔", "省", "贵阳", "西南", ("黄果树瀑布", "西江苗寨"), "酸汤鱼", "山地多，平地少，夏天气候凉爽。"),
    Province("云南省", "滇", "省", "昆明", "西南", ("石林", "丽江古城"), "过桥米线", "少数民族众多，动植物的种类特别丰富。"),
    Province("西藏自治区", "藏", "自治区", "拉萨", "西南", ("布达拉宫", "珠穆朗玛峰"), "酥油茶", "位于青藏高原，平均海拔四千米以上，被称为“世界屋脊”。"),
    Province("陕西省", "陕", "省", "西安", "西北", ("兵马俑", "西安城墙"), "肉夹馍", "是周、秦、汉、唐等朝代建都的地方，古迹众多。"),
    Province("甘肃省", "甘", "省", "兰州", "西北", ("莫高窟", "嘉峪关"), "兰州牛肉面", "地形狭长，河西走廊是古代丝绸之路的必经之地。"),
    Province("青海省", "青", "省", "西宁", "西北", ("青海湖", "塔尔寺"), "手抓羊肉", "是长江、黄河和澜沧江的发源地，有“三江源”之称。"),
    Province("宁夏回族自治区", "宁", "自治区", "银川", "西北", ("沙湖", "西夏王陵"), "滩羊肉", "黄河流过这里，灌溉出大片良田，有“塞上江南”的美称。"),
    Province("新疆维吾尔自治区", "新", "自治区", "乌鲁木齐", "西北", ("天山天池", "喀纳斯湖"), "大盘鸡", "是中国面积最大的省级行政区，天山横贯中部，这里的瓜果特别甜。"),
)
REGIONS = ("华北", "东北", "华东", "华中", "华南", "西南", "西北")


@dataclass(frozen=True)
class City:
    name: str
    province: str  # full province name, or "" for a municipality
    role: str  # 首都 / 直辖市 / 省会 / 首府 / 城市
    famous: tuple[str, str]  # "以A和B闻名"
    nickname: str  # "" when none
    note: str  # one or two sentences, no subject


CITIES = (
    City("北京", "", "首都", ("故宫", "长城"), "", "是一座有三千多年历史的古城，城市的中轴线从南到北贯穿老城。"),
    City("上海", "", "直辖市", ("外滩", "东方明珠"), "", "是一座国际化的大都市，黄浦江把城市分成浦东和浦西。"),
    City("天津", "", "直辖市", ("海河", "煎饼果子"), "", "离北京很近，坐高铁只要半个多小时。"),
    City("重庆", "", "直辖市", ("火锅", "洪崖洞"), "山城", "的房子依山而建，轻轨列车甚至从楼房中间穿过。"),
    City("杭州", "浙江省", "省会", ("西湖", "龙井茶"), "", "风景秀丽，自古就有“上有天堂，下有苏杭”的说法。"),
    City("苏州", "江苏省", "城市", ("园林", "丝绸"), "", "城里小河纵横，是一座典型的江南水城。"),
    City("南京", "江苏省", "省会", ("中山陵", "夫子庙"), "", "历史上有多个朝代在这里建都，是著名的古都。"),
    City("扬州", "江苏省", "城市", ("瘦西湖", "早茶"), "", "位于长江北岸，大运河从城边流过。"),
    City("绍兴", "浙江省", "城市", ("黄酒", "乌篷船"), "", "是作家鲁迅的故乡，城里到处是小桥流水。"),
    City("西安", "陕西省", "省会", ("兵马俑", "古城墙"), "", "古时候叫长安，是丝绸之路的起点。"),
    City("成都", "四川省", "省会", ("大熊猫", "火锅"), "蓉城", "生活节奏悠闲，人们喜欢在茶馆里喝茶聊天。"),
    City("广州", "广东省", "省会", ("早茶", "珠江夜景"), "花城", "一年四季鲜花不断，是华南最大的城市之一。"),
    City("深圳", "广东省", "城市", ("科技公司", "海滨公园"), "", "四十多年前还是一个小渔村，如今已经是一座现代化的大城市。"),
    City("昆明", "云南省", "省会", ("滇池", "鲜花"), "春城", "冬天不冷，夏天不热，一年四季都像春天。"),
    City("桂林", "广西壮族自治区", "城市", ("山水", "漓江"), "", "的山峰像一根根竹笋立在地上，漓江从山间流过。"),
    City("拉萨", "西藏自治区", "首府", ("布达拉宫", "大昭寺"), "日光城", "海拔三千六百多米，阳光特别充足。"),
    City("哈尔滨", "黑龙江省", "省会", ("冰雪大世界", "中央大街"), "冰城", "冬天非常寒冷，人们用冰块雕出一座座冰灯。"),
    City("青岛", "山东省", "城市", ("海滨", "啤酒"), "", "红瓦绿树，碧海蓝天，夏天是避暑的好地方。"),
    City("济南", "山东省", "省会", ("趵突泉", "大明湖"), "泉城", "城里有许多泉水，泉水汇成了大明湖。"),
    City("厦门", "福建省", "城市", ("鼓浪屿", "海景"), "", "是一座美丽的海滨城市，街道干净，空气清新。"),
    City("大连", "辽宁省", "城市", ("海滨", "广场"), "", "三面环海，夏天凉爽，是北方有名的海滨城市。"),
    City("武汉", "湖北省", "省会", ("黄鹤楼", "热干面"), "江城", "长江和汉江在这里交汇，把城市分成三块。"),
    City("长沙", "湖南省", "省会", ("岳麓山", "橘子洲"), "", "的小吃很多，臭豆腐和米粉都很受欢迎。"),
    City("洛阳", "河南省", "城市", ("牡丹", "龙门石窟"), "", "是著名的古都，每年春天都要举办牡丹花会。"),
    City("开封", "河南省", "城市", ("清明上河园", "夜市"), "", "是北宋的都城，当年是世界上最繁华的城市之一。"),
    City("敦煌", "甘肃省", "城市", ("莫高窟", "鸣沙山"), "", "位于河西走廊的西端，是丝绸之路上的重镇。"),
    City("兰州", "甘肃省", "省会", ("牛肉面", "黄河铁桥"), "", "是黄河穿城而过的城市，大街小巷都有牛肉面馆。"),
    City("三亚", "海南省", "城市", ("海滩", "椰林"), "", "是中国最南边的热带海滨城市之一，冬天也很暖和。"),
    City("丽江", "云南省", "城市", ("古城", "玉龙雪山"), "", "古城里的小溪穿街过巷，纳西族的文化很有特色。"),
    City("景德镇", "江西省", "城市", ("瓷器", "陶瓷博物馆"), "瓷都", "烧制瓷器已经有一千多年的历史。"),
)


@dataclass(frozen=True)
class SolarTerm:
    name: str
    month: int
    day: int
    meaning: str  # no subject: "春天开始了，..."


SOLAR_TERMS = (
    SolarTerm("立春", 2, 4, "春天开始了，气温慢慢回升"),
    SolarTerm("雨水", 2, 19, "降雨开始增多，雪渐渐少了"),
    SolarTerm("惊蛰", 3, 6, "春雷开始响起，冬眠的动物醒过来"),
    SolarTerm("春分", 3, 21, "白天和黑夜几乎一样长"),
    SolarTerm("清明", 4, 5, "天气清朗，草木变绿，人们扫墓踏青"),
    SolarTerm("谷雨", 4, 20, "雨水滋润田里的谷物"),
    SolarTerm("立夏", 5, 6, "夏天开始了，天气渐渐变热"),
    SolarTerm("小满", 5, 21, "麦子的籽粒开始饱满，但还没有完全成熟"),
    SolarTerm("芒种", 6, 6, "麦子成熟了，农民忙着收割和播种"),
    SolarTerm("夏至", 6, 21, "北半球白天最长，黑夜最短"),
    SolarTerm("小暑", 7, 7, "天气开始炎热"),
    SolarTerm("大暑", 7, 23, "天气最炎热"),
    SolarTerm("立秋", 8, 8, "秋天开始了，早晚渐渐凉快"),
    SolarTerm("处暑", 8, 23, "炎热的暑天就要结束"),
    SolarTerm("白露", 9, 8, "早晚的草叶上出现露水"),
    SolarTerm("秋分", 9, 23, "白天和黑夜又几乎一样长"),
    SolarTerm("寒露", 10, 8, "露水更凉，天气转冷"),
    SolarTerm("霜降", 10, 23, "早上开始出现霜"),
    SolarTerm("立冬", 11, 7, "冬天开始了，北方人爱吃饺子"),
    SolarTerm("小雪", 11, 22, "北方开始下雪，雪量还不大"),
    SolarTerm("大雪", 12, 7, "雪下得越来越大"),
    SolarTerm("冬至", 12, 22, "北半球白天最短，黑夜最长"),
    SolarTerm("小寒", 1, 6, "天气开始变得寒冷"),
    SolarTerm("大寒", 1, 20, "天气最寒冷"),
)
SEASONS = (
    ("春天", "三月、四月和五月", "万物复苏，花开草绿，燕子从南方飞回来", "放风筝、踏青"),
    ("夏天", "六月、七月和八月", "天气炎热，雨水多，树木长得最茂盛", "游泳、吃西瓜"),
    ("秋天", "九月、十月和十一月", "天高气爽，树叶变黄，庄稼成熟", "爬山、赏菊"),
    ("冬天", "十二月、一月和二月", "天气寒冷，北方常常下雪，很多动物冬眠", "堆雪人、滑冰"),
)


@dataclass(frozen=True)
class Animal:
    name: str
    english: str
    kind: str  # 哺乳动物 / 鸟类 / 鱼类 / 爬行动物 / 两栖动物 / 昆虫
    habitat: str
    food: str
    feature: str  # no subject


ANIMALS = (
    Animal("大熊猫", "panda", "哺乳动物", "中国西南的竹林里", "竹子", "身上的毛黑白相间，是中国的国宝"),
    Animal("老虎", "tiger", "哺乳动物", "森林里", "鹿和野猪等动物", "身上有黑色的条纹，被称为森林之王"),
    Animal("狮子", "lion", "哺乳动物", "非洲的草原上", "斑马和羚羊等动物", "雄狮的脖子上有长长的鬃毛"),
    Animal("大象", "elephant", "哺乳动物", "非洲和亚洲的森林和草原上", "草、树叶和果实", "有长长的鼻子，是陆地上最大的动物"),
    Animal("长颈鹿", "giraffe", "哺乳动物", "非洲的草原上", "树叶", "脖子很长，是世界上最高的动物"),
    Animal("猫", "cat", "哺乳动物", "人们的家里", "鱼和肉", "爱干净，会抓老鼠"),
    Animal("狗", "dog", "哺乳动物", "人们的家里", "肉和骨头", "对主人忠诚，鼻子特别灵"),
    Animal("兔子", "rabbit", "哺乳动物", "草地和山坡上", "青草和蔬菜", "耳朵长长的，跑得很快"),
    Animal("猴子", "monkey", "哺乳动物", "森林里", "水果和树叶", "动作灵活，很会爬树"),
    Animal("马", "horse", "哺乳动物", "草原上", "青草", "跑得又快又远"),
    Animal("牛", "cow", "哺乳动物", "农村和牧场", "青草", "力气很大，能帮农民耕地"),
    Animal("羊", "sheep", "哺乳动物", "草原和山坡上", "青草", "身上长着厚厚的羊毛"),
    Animal("骆驼", "camel", "哺乳动物", "沙漠里", "草和灌木", "背上有驼峰，被称为沙漠之舟"),
    Animal("海豚", "dolphin", "哺乳动物", "海洋里", "鱼", "非常聪明，用肺呼吸"),
    Animal("鲸", "whale", "哺乳动物", "海洋里", "小鱼和磷虾", "是海洋里的庞然大物，其中的蓝鲸是地球上最大的动物"),
    Animal("袋鼠", "kangaroo", "哺乳动物", "澳大利亚的草原上", "青草", "妈妈的肚子上有一个育儿袋"),
    Animal("北极熊", "polar bear", "哺乳动物", "北极的冰原上", "海豹", "身上的毛是白色的，非常怕热"),
    Animal("松鼠", "squirrel", "哺乳动物", "树林里", "松子和坚果", "有一条蓬松的大尾巴"),
    Animal("企鹅", "penguin", "鸟类", "南极", "鱼和磷虾", "不会飞，但是很会游泳"),
    Animal("燕子", "swallow", "鸟类", "人们房子的屋檐下", "飞虫", "秋天飞到南方，春天再飞回来"),
    Animal("麻雀", "sparrow", "鸟类", "城市和乡村", "谷物和小虫", "是最常见的小鸟"),
    Animal("丹顶鹤", "red-crowned crane", "鸟类", "湿地里", "鱼虾和水草", "头顶上有一块红色"),
    Animal("啄木鸟", "woodpecker", "鸟类", "森林里", "树干里的虫子", "被称为森林医生"),
    Animal("孔雀", "peacock", "鸟类", "热带的森林里", "种子和昆虫", "雄孔雀会开屏，羽毛非常漂亮"),
    Animal("鹦鹉", "parrot", "鸟类", "热带的森林里", "果实和种子", "羽毛鲜艳，能学人说话"),
    Animal("金鱼", "goldfish", "鱼类", "鱼缸和池塘里", "鱼食和小虫", "颜色鲜艳，最早是在中国培育出来的"),
    Animal("鲨鱼", "shark", "鱼类", "海洋里", "鱼", "牙齿非常锋利"),
    Animal("青蛙", "frog", "两栖动物", "池塘和稻田里", "昆虫", "小时候是蝌蚪，长大后能捉害虫"),
    Animal("乌龟", "turtle", "爬行动物", "河湖和池塘边", "小鱼、小虫和水草", "背着坚硬的壳，寿命很长"),
    Animal("蛇", "snake", "爬行动物", "草丛和树林里", "老鼠和青蛙", "身体细长，没有脚"),
    Animal("蜜蜂", "bee", "昆虫", "蜂巢里", "花蜜和花粉", "会酿蜂蜜，还能帮花朵传粉"),
    Animal("蝴蝶", "butterfly", "昆虫", "花丛中", "花蜜", "翅膀很美丽，是由毛毛虫变成的"),
    Animal("蚂蚁", "ant", "昆虫", "地下的蚁穴里", "食物的碎屑和小虫", "非常团结，能搬动比自己重得多的东西"),
    Animal("蜻蜓", "dragonfly", "昆虫", "水边", "蚊子和小飞虫", "飞得很快，是捉蚊子的能手"),
)


@dataclass(frozen=True)
class Plant:
    name: str
    english: str
    kind: str  # 花 / 树 / 农作物 / 植物
    season: str  # flowering or best season; "" when not meaningful
    note: str  # no subject


PLANTS = (
    Plant("梅花", "plum blossom", "花", "冬天", "在寒冷的冬天开放，不怕风雪"),
    Plant("桃花", "peach blossom", "花", "春天", "花朵是粉红色的，开过以后会结出桃子"),
    Plant("荷花", "lotus", "花", "夏天", "长在池塘里，出淤泥而不染"),
    Plant("菊花", "chrysanthemum", "花", "秋天", "颜色很多，有黄的、白的和紫的"),
    Plant("牡丹", "peony", "花", "春天", "花朵又大又艳丽，被称为花中之王"),
    Plant("桂花", "osmanthus", "花", "秋天", "花很小，但是香气很浓"),
    Plant("向日葵", "sunflower", "花", "夏天", "花盘总是跟着太阳转，种子可以炒成瓜子"),
    Plant("兰花", "orchid", "花", "春天", "香气清淡优雅"),
    Plant("竹子", "bamboo", "植物", "", "四季常绿，长得很快，茎是空心的"),
    Plant("松树", "pine tree", "树", "", "四季常青，不怕寒冷"),
    Plant("柳树", "willow", "树", "", "枝条细长，春天发芽最早"),
    Plant("银杏", "ginkgo", "树", "", "叶子像小扇子，秋天会变成金黄色"),
    Plant("枫树", "maple", "树", "", "叶子到了秋天会变成红色"),
    Plant("水稻", "rice", "农作物", "", "喜欢温暖湿润的地方，是南方主要的粮食作物"),
    Plant("小麦", "wheat", "农作物", "", "磨成面粉可以做馒头和面条，是北方主要的粮食作物"),
    Plant("玉米", "corn", "农作物", "", "植株高大，玉米棒上排满了金黄的籽粒"),
    Plant("茶树", "tea plant", "树", "", "生长在南方的山区，嫩叶可以制成茶叶"),
    Plant("仙人掌", "cactus", "植物", "", "长着尖尖的刺，非常耐旱，能在沙漠里生长"),
)


@dataclass(frozen=True)
class Planet:
    name: str
    english: str
    note: str  # no subject


PLANETS = (
    Planet("水星", "Mercury", "是太阳系中最小的行星，离太阳最近，表面温差很大"),
    Planet("金星", "Venus", "是天空中除了太阳和月亮以外最亮的星星，表面非常炎热"),
    Planet("地球", "Earth", "是我们居住的星球，表面大部分被海洋覆盖，是目前已知唯一有生命的行星"),
    Planet("火星", "Mars", "表面是红色的，有高大的火山和干涸的河床"),
    Planet("木星", "Jupiter", "是太阳系中最大的行星，有一个巨大的红斑"),
    Planet("土星", "Saturn", "周围有一圈美丽的光环"),
    Planet("天王星", "Uranus", "像是躺着绕太阳转动"),
    Planet("海王星", "Neptune", "是离太阳最远的行星，看起来是蓝色的"),
)


@dataclass(frozen=True)
class Dynasty:
    name: str
    founder: str  # "" when not asked
    year: str  # "公元前221年", "618年"
    capital: str  # "" when not asked
    note: str  # no subject


DYNASTIES = (
    Dynasty("夏朝", "禹", "约公元前2070年", "", "是史书记载的中国第一个王朝"),
    Dynasty("商朝", "汤", "约公元前1600年", "", "留下了刻在龟甲和兽骨上的甲骨文，青铜器也很精美"),
    Dynasty("周朝", "周武王", "约公元前1046年", "", "分为西周和东周，东周又分为春秋和战国两个时期"),
    Dynasty("秦朝", "秦始皇", "公元前221年", "咸阳", "是中国第一个统一的中央集权王朝，统一了文字、货币和度量衡"),
    Dynasty("汉朝", "刘邦", "公元前202年", "长安", "分为西汉和东汉，张骞出使西域，开辟了丝绸之路"),
    Dynasty("隋朝", "杨坚", "581年", "大兴", "开凿了大运河，开始用科举考试选拔人才"),
    Dynasty("唐朝", "李渊", "618年", "长安", "国力强盛，诗歌繁荣，出现了李白和杜甫等大诗人"),
    Dynasty("宋朝", "赵匡胤", "960年", "开封", "经济和文化很发达，毕昇发明了活字印刷术"),
    Dynasty("元朝", "忽必烈", "1271年", "大都", "疆域非常辽阔，大都就是今天的北京"),
    Dynasty("明朝", "朱元璋", "1368年", "南京，后来迁到北京", "郑和七次下西洋，北京的故宫也是这个时候修建的"),
    Dynasty("清朝", "", "1636年", "北京", "是中国最后一个封建王朝，在1912年结束"),
)


@dataclass(frozen=True)
class Idiom:
    text: str
    meaning: str  # starts with 比喻 / 形容 / 表示 ...
    story: str  # our own retelling, one or two sentences
    example: str  # a sentence using it


IDIOMS = (
    Idiom("画蛇添足", "比喻做了多余的事，反而坏了事", "几个人比赛画蛇，先画完的人得意地给蛇添上了脚，结果酒被别人拿走了，因为蛇本来没有脚。", "这篇作文已经写得很好了，再加这一段就是画蛇添足。"),
    Idiom("守株待兔", "比喻不主动努力，只想靠运气得到好处", "一个农夫看见兔子撞在树桩上死了，从此不再种地，天天守在树桩旁边等兔子，结果田地都荒了。", "学习要靠自己努力，守株待兔是等不来好成绩的。"),
    Idiom("亡羊补牢", "比喻出了问题以后及时补救，还不算晚", "有人丢了羊，邻居劝他修好羊圈，他不听，结果又丢了羊，这才赶紧把羊圈修好，以后再也没丢过羊。", "这次考试没考好，亡羊补牢，现在认真复习还来得及。"),
    Idiom("掩耳盗铃", "比喻自己欺骗自己", "有个人想偷一口钟，怕钟响被人听见，就捂住自己的耳朵，以为自己听不见，别人也就听不见了。", "考试作弊还以为老师不知道，真是掩耳盗铃。"),
    Idiom("刻舟求剑", "比喻做事死板，不懂得随着情况的变化而改变办法", "一个人坐船时剑掉进了江里，他在船边刻了个记号，等船停下后从记号的地方下水找剑，当然找不到。", "情况已经变了，还用老办法，这不是刻舟求剑吗？"),
    Idiom("对牛弹琴", "比喻说话不看对象", "有人对着一头牛弹奏优美的曲子，牛却只顾低头吃草。", "跟不懂围棋的人讲棋谱，简直是对牛弹琴。"),
    Idiom("井底之蛙", "比喻见识狭窄的人", "一只青蛙住在井底，以为天只有井口那么大，海龟告诉它大海有多么广阔，它才大吃一惊。", "多读书、多出去看看，才不会做井底之蛙。"),
    Idiom("狐假虎威", "比喻依仗别人的势力欺负人", "狐狸骗老虎说自己是百兽之王，让老虎跟在身后，动物们见了老虎纷纷逃跑，老虎还以为它们怕的是狐狸。", "他仗着哥哥是班长就对同学发号施令，真是狐假虎威。"),
    Idiom("自相矛盾", "比喻说话做事前后抵触", "有人卖矛又卖盾，说他的矛什么都能刺穿，他的盾什么都刺不穿，有人问用你的矛刺你的盾会怎样，他答不上来。", "他一会儿说去过，一会儿又说没去过，说话自相矛盾。"),
    Idiom("拔苗助长", "比喻违反事物的规律，急于求成，反而坏了事", "一个农夫嫌禾苗长得太慢，就把禾苗一棵棵往上拔，第二天禾苗全都枯死了。", "学钢琴要一步一步来，拔苗助长只会让孩子失去兴趣。"),
    Idiom("叶公好龙", "比喻口头上说爱好某种事物，其实并不是真的爱好", "叶公说自己最喜欢龙，家里到处画着龙，可真龙来看他时，他却吓得转身就跑。", "他说喜欢小动物，可小狗一靠近他就躲开，真是叶公好龙。"),
    Idiom("画龙点睛", "比喻在关键的地方加上一笔，使内容更加生动", "传说一位画家在墙上画了几条龙，给其中两条点上眼睛后，它们就飞上了天。", "文章最后这一句画龙点睛，让整篇文章都生动起来。"),
    Idiom("半途而废", "比喻做事没有坚持到底", "一个年轻人外出求学，才学了一年就想家回来了，妻子剪断织了一半的布，告诉他学习不能半途而废。", "既然开始学游泳了，就不要半途而废。"),
    Idiom("胸有成竹", "比喻做事之前已经有了完整的打算", "一位画家画竹子之前，心里已经有了竹子的样子，所以下笔又快又好。", "对这次比赛，他早已胸有成竹。"),
    Idiom("卧薪尝胆", "形容刻苦自励，发愤图强", "越王勾践打了败仗以后，晚上睡在柴草上，每天尝一尝苦胆，提醒自己不忘耻辱，最后打败了吴国。", "他卧薪尝胆，苦练三年，终于拿到了冠军。"),
    Idiom("闻鸡起舞", "比喻有志向的人及时奋发努力", "祖逖和朋友半夜听到鸡叫就起床练剑，天天如此，后来都成了有本领的人。", "哥哥为了考大学闻鸡起舞，每天早起背单词。"),
    Idiom("三顾茅庐", "比喻真心诚意地再三邀请", "刘备为了请诸葛亮出山帮助自己，三次到诸葛亮住的草屋去拜访。", "校长三顾茅庐，终于请来了这位有名的老师。"),
    Idiom("纸上谈兵", "比喻只会空谈理论，不能解决实际问题", "赵括熟读兵书，谈起打仗头头是道，可真上了战场却打了大败仗。", "光看菜谱不下厨房，学做菜就成了纸上谈兵。"),
    Idiom("望梅止渴", "比喻用空想来安慰自己", "行军的士兵口渴难忍，曹操说前面有一片梅林，士兵们想到酸梅，嘴里流出口水，就不那么渴了。", "没钱买新自行车，他只好看看图片，望梅止渴。"),
    Idiom("愚公移山", "比喻做事有毅力，不怕困难", "愚公家门前有两座大山，他带着子孙每天挖山不止，说子子孙孙挖下去，总有一天能把山挖平。", "只要有愚公移山的精神，再难的事也能做成。"),
    Idiom("精卫填海", "比喻意志坚决，不怕艰难", "传说炎帝的小女儿在东海淹死后化作精卫鸟，每天衔来树枝和石子，要把大海填平。", "他们像精卫填海一样，一年又一年地在沙漠里种树。"),
    Idiom("滥竽充数", "比喻没有真本领的人混在行家里面凑数", "南郭先生不会吹竽，却混在三百人的乐队里装样子，后来新的国王要一个一个地听，他只好偷偷逃走了。", "合唱团里他不会唱歌，只是滥竽充数。"),
    Idiom("破釜沉舟", "比喻下定决心，不留退路", "项羽带兵渡河以后，下令砸破饭锅、凿沉渡船，士兵们没有退路，只能拼命作战，终于打了胜仗。", "他破釜沉舟，辞掉工作专心准备考试。"),
    Idiom("完璧归赵", "比喻把原物完好无损地归还原主", "蔺相如带着和氏璧出使秦国，看出秦王不想用城池交换，便设法把宝玉完好地送回了赵国。", "借来的书我看完了，今天完璧归赵。"),
    Idiom("负荆请罪", "表示主动向人认错赔罪", "廉颇知道自己错怪了蔺相如，就背着荆条到蔺相如家里请罪，两人从此成了好朋友。", "弟弟弄坏了我的模型，第二天就负荆请罪来了。"),
    Idiom("班门弄斧", "比喻在行家面前卖弄本领", "鲁班是有名的木匠，有人在鲁班家门口摆弄斧头，想显示自己的手艺。", "在书法老师面前写字，我这是班门弄斧了。"),
    Idiom("塞翁失马", "比喻一时受到损失，也许反而因此得到好处",
          "边塞的一位老人丢了一匹马，邻居来安慰他，他却说未必是坏事，不久那匹马带着一匹好马回来了。",
          "塞翁失马，焉知非福，没赶上那班车，却在车站遇到了老同学。"),
    Idiom("一鸣惊人", "比喻平时没有突出的表现，一下子做出惊人的成绩", "有人说一只大鸟三年不飞也不叫，楚庄王回答，它不飞则已，一飞冲天；不鸣则已，一鸣惊人。", "他平时不声不响，这次比赛却一鸣惊人。"),
    Idiom("水滴石穿", "比喻只要坚持不懈，微小的力量也能做成很难的事", "屋檐下的水一滴一滴地落在石头上，日子久了，竟然把石头滴出了一个小坑。", "每天背十个单词，水滴石穿，一年下来就是三千多个。"),
    Idiom("熟能生巧", "表示熟练了就能找到窍门", "卖油的老人把铜钱放在葫芦口上，把油从钱孔里倒进葫芦，钱却一点也没湿，他说这没什么，只是手熟罢了。", "包饺子一开始包不好，多包几次，熟能生巧。"),
    Idiom("一心一意", "形容心思专一，没有别的念头", "做一件事的时候只想着这一件事，不三心二意。", "他一心一意地做作业，连妈妈叫他都没听见。"),
    Idiom("千里之行，始于足下", "比喻事情要从头做起，从小处做起", "走一千里的路，也要从迈出第一步开始。", "千里之行，始于足下，学外语就从每天读一句开始吧。"),
)


WORDS = (  # (Chinese, English)
    ("苹果", "apple"), ("香蕉", "banana"), ("西瓜", "watermelon"), ("葡萄", "grape"), ("橘子", "orange"),
    ("草莓", "strawberry"), ("书", "book"), ("学校", "school"), ("老师", "teacher"), ("学生", "student"),
    ("朋友", "friend"), ("家", "home"), ("水", "water"), ("火", "fire"), ("山", "mountain"), ("河", "river"),
    ("海", "sea"), ("太阳", "sun"), ("月亮", "moon"), ("星星", "star"), ("天空", "sky"), ("云", "cloud"),
    ("雨", "rain"), ("雪", "snow"), ("风", "wind"), ("花", "flower"), ("树", "tree"), ("鸟", "bird"),
    ("鱼", "fish"), ("红色", "red"), ("蓝色", "blue"), ("绿色", "green"), ("黄色", "yellow"), ("白色", "white"),
    ("黑色", "black"), ("春天", "spring"), ("夏天", "summer"), ("秋天", "autumn"), ("冬天", "winter"),
    ("早上", "morning"), ("晚上", "evening"), ("今天", "today"), ("明天", "tomorrow"), ("昨天", "yesterday"),
    ("电脑", "computer"), ("手机", "mobile phone"), ("汽车", "car"), ("火车", "train"), ("飞机", "airplane"),
    ("医生", "doctor"), ("医院", "hospital"), ("米饭", "rice"), ("面条", "noodles"), ("茶", "tea"),
    ("牛奶", "milk"), ("鸡蛋", "egg"), ("面包", "bread"), ("眼睛", "eye"), ("耳朵", "ear"), ("手", "hand"),
    ("爸爸", "father"), ("妈妈", "mother"), ("你好", "hello"), ("谢谢", "thank you"), ("再见", "goodbye"),
    ("早上好", "good morning"), ("晚安", "good night"), ("对不起", "sorry"),
)
WORD_GROUPS = (("水果", 0, 6), ("学校和生活", 6, 12), ("自然", 12, 29), ("颜色", 29, 35), ("季节", 35, 39),
               ("时间", 39, 44), ("交通和工具", 44, 49), ("吃的和喝的", 51, 57), ("身体和家人", 57, 62),
               ("常用语", 62, 68))

SENTIMENT = (  # (sentence, label)
    ("今天和朋友去爬山，风景美极了。", "积极"), ("这家店的面条又便宜又好吃。", "积极"),
    ("我终于学会骑自行车了，太开心了！", "积极"), ("老师表扬了我的作文，我心里美滋滋的。", "积极"),
    ("这本书写得真好，我一口气就读完了。", "积极"), ("新搬的家又宽敞又明亮。", "积极"),
    ("周末一家人去海边玩，大家都很高兴。", "积极"), ("这部电影让我感动得流下了眼泪，真是好片子。", "积极"),
    ("快递第二天就到了，包装也很仔细。", "积极"), ("雨后的空气清新极了，心情特别好。", "积极"),
    ("我们队赢了比赛，全场都在欢呼。", "积极"), ("医生很耐心，把病情讲得清清楚楚。", "积极"),
    ("外婆做的红烧肉香得不得了。", "积极"), ("这次旅行安排得很周到，玩得很尽兴。", "积极"),
    ("同学们互相帮助，班里的气氛很温暖。", "积极"), ("这台新电脑速度快，用起来很顺手。", "积极"),
    ("今天又下雨了，出门的计划全泡汤了。", "消极"), ("这家餐厅的菜又贵又难吃。", "消极"),
    ("手机刚买一个月就坏了，真让人生气。", "消极"), ("排了两个小时的队，结果票卖完了。", "消极"),
    ("这部电影情节拖沓，看得我都快睡着了。", "消极"), ("楼上天天装修，吵得人没法休息。", "消极"),
    ("考试没考好，我难过了一整天。", "消极"), ("快递丢了，客服也不理人。", "消极"),
    ("房间又小又暗，窗户还关不严。", "消极"), ("路上堵车堵了一个多小时，真是烦死了。", "消极"),
    ("我最喜欢的杯子摔碎了，心里很难受。", "消极"), ("服务员态度很差，再也不来了。", "消极"),
    ("感冒了好几天，头疼得厉害。", "消极"), ("比赛最后一分钟被对手反超，太遗憾了。", "消极"),
    ("衣服洗了一次就缩水了，质量太差。", "消极"), ("好朋友搬走了，我一个人觉得很孤单。", "消极"),
)

FACTS = (  # (question, answer): science and common sense
    ("水在多少摄氏度时结冰？", "在标准大气压下，水在零摄氏度时结冰。"),
    ("太阳从哪个方向升起？", "太阳从东方升起，从西方落下。"),
    ("一年有几个月？", "一年有十二个月。"), ("一个星期有几天？", "一个星期有七天。"),
    ("一天有多少个小时？", "一天有二十四个小时。"), ("一小时有多少分钟？", "一小时有六十分钟。"),
    ("一年有几个季节？", "一年有四个季节，分别是春天、夏天、秋天和冬天。"),
    ("二十四节气中的第一个节气是什么？", "二十四节气中的第一个节气是立春。"),
    ("地球绕太阳转一圈需要多长时间？", "地球绕太阳转一圈大约需要一年。"),
    ("月亮自己会发光吗？", "月亮自己不会发光，它反射的是太阳的光。"),
    ("太阳系有几颗行星？", "太阳系有八颗行星。"),
    ("太阳系中最大的行星是哪一颗？", "太阳系中最大的行星是木星。"),
    ("离太阳最近的行星是哪一颗？", "离太阳最近的行星是水星。"),
    ("植物的光合作用需要什么？", "光合作用需要阳光、水和二氧化碳，产生养料和氧气。"),
    ("人呼吸需要什么气体？", "人呼吸需要氧气，呼出二氧化碳。"),
    ("为什么先看到闪电后听到雷声？", "因为光传播得比声音快得多。"),
    ("中国最长的河流是哪一条？", "中国最长的河流是长江。"),
    ("被称为母亲河的是哪一条河？", "黄河被称为中华民族的母亲河。"),
    ("世界上最高的山峰是哪一座？", "世界上最高的山峰是珠穆朗玛峰。"),
    ("中国有多少个省级行政区？", "中国有三十四个省级行政区。"),
    ("中国面积最大的省级行政区是哪个？", "中国面积最大的省级行政区是新疆维吾尔自治区。"),
    ("中国的四大发明是什么？", "中国的四大发明是造纸术、印刷术、火药和指南针。"),
    ("彩虹有几种颜色？", "彩虹有七种颜色：红、橙、黄、绿、蓝、靛、紫。"),
    ("地球上最大的动物是什么？", "地球上最大的动物是蓝鲸。"),
    ("春节是哪一天？", "春节是农历正月初一。"), ("中秋节是哪一天？", "中秋节是农历八月十五。"),
    ("端午节是哪一天？", "端午节是农历五月初五。"), ("端午节吃什么？", "端午节吃粽子。"),
    ("中秋节吃什么？", "中秋节吃月饼。"), ("元宵节吃什么？", "元宵节吃元宵，也就是汤圆。"),
    ("你是谁？", "我是一个用TencentPretrain训练的中文小模型，可以回答一些简单的问题。"),
    ("你好", "你好！有什么可以帮你的吗？"),
    ("谢谢你", "不客气，很高兴能帮到你。"),
)

# Demo prompts: exact instruction strings whose answers are in instructions.jsonl (see data/README.md).
DEMO_PROMPTS = ("浙江省的省会是哪里？", "介绍一下杭州。", "“画蛇添足”是什么意思？", "大熊猫吃什么？", "三加五等于几？")


# ============================================================================================== helpers
_DIGITS = "零一二三四五六七八九"


def zh_number(n: int) -> str:
    """Chinese numeral of 0 <= n < 10000: 12 -> 十二, 56 -> 五十六, 105 -> 一百零五."""
    if not 0 <= n < 10000:
        raise ValueError(f"zh_number supports 0..9999, got {n}")
    if n < 10:
        return _DIGITS[n]
    if n < 20:
        return "十" + (_DIGITS[n % 10] if n % 10 else "")
    parts: list[str] = []
    zero = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // value % 10
        if digit:
            if zero:
                parts.append("零")
            parts.append(_DIGITS[digit] + unit)
            zero = False
        elif parts:
            zero = True
    return "".join(parts)


def plus(a: int, b: int) -> str:
    """三加五等于八"""
    return f"{zh_number(a)}加{zh_number(b)}等于{zh_number(a + b)}"


def times(a: int, b: int) -> str:
    """七乘以八等于五十六"""
    return f"{zh_number(a)}乘以{zh_number(b)}等于{zh_number(a * b)}"


def count_word(n: int) -> str:
    """A number before a measure word: 两 for 2 (两个苹果), else zh_number."""
    return "两" if n == 2 else zh_number(n)


def capital_word(p: Province) -> str:
    """省会 for a province, 首府 for an autonomous region."""
    return "首府" if p.kind == "自治区" else "省会"


def province_status(p: Province) -> str:
    """The clause that says what p's centre is: "省会是杭州", "是中国的四个直辖市之一"."""
    if p.capital:
        return f"{capital_word(p)}是{p.capital}"
    return {"直辖市": "是中国的四个直辖市之一", "特别行政区": "是中国的两个特别行政区之一"}[p.kind]


def city_where(c: City) -> str:
    """北京 -> 中国的首都; 杭州 -> 浙江省的省会; 苏州 -> 江苏省的一座城市."""
    if c.role == "首都":
        return "中国的首都"
    if c.role == "直辖市":
        return "中国的直辖市"
    return f"{c.province}的{c.role}" if c.role in ("省会", "首府") else f"{c.province}的一座城市"


def city_intro(c: City) -> str:
    return f"{c.name}是{city_where(c)}，以{c.famous[0]}和{c.famous[1]}闻名。"


def join_items(items: Sequence[str]) -> str:
    """A、B和C."""
    return items[0] if len(items) == 1 else "、".join(items[:-1]) + "和" + items[-1]


def record(instruction: str, output: str, input: str = "") -> Record:
    return {"instruction": instruction, "input": input, "output": output}


def chat(*turns: str, system: str | None = None) -> Conversation:
    """A conversation from alternating user/assistant texts."""
    messages = [{"role": "system", "content": system}] if system else []
    roles = ("user", "assistant")
    messages += [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]
    return {"messages": messages}


def read_lines(name: str) -> list[str]:
    """The non-empty lines of the hand-written source scripts/demo_data/<name>."""
    text = (SOURCES / name).read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line.strip()]


# ============================================================================================== instructions
def province_instructions() -> list[Record]:
    out = []
    for i, p in enumerate(PROVINCES):
        out.append(record(f"{p.name}的简称是什么？", f"{p.name}的简称是“{p.short}”。"))
        if p.capital:
            word = capital_word(p)
            out.append(record(f"{p.name}的{word}是哪里？", f"{p.name}的{word}是{p.capital}。"))
        if i % 2 == 0:
            out.append(record(f"{p.name}有哪些有名的景点？", f"{p.name}有名的景点有{p.sights[0]}和{p.sights[1]}。"))
    return out


def knowledge_instructions() -> list[Record]:
    out = [record(f"介绍一下{c.name}。", city_intro(c)) for c in CITIES]
    for i, t in enumerate(SOLAR_TERMS, 1):
        out.append(record(f"{t.name}在什么时候？", f"{t.name}是二十四节气中的第{zh_number(i)}个，一般在每年公历{t.month}月{t.day}日前后。"))
        if i % 3 == 0:
            out.append(record(f"节气“{t.name}”有什么特点？", f"{t.name}的时候，{t.meaning}。"))
    for i, a in enumerate(ANIMALS):
        out.append(record(f"{a.name}吃什么？", f"{a.name}主要吃{a.food}。"))
        if i % 3 == 0:
            out.append(record(f"{a.name}属于哪一类动物？", f"{a.name}属于{a.kind}。"))
    for p in PLANTS:
        out.append(record(f"介绍一下{p.name}。", f"{p.name}{p.note}。"))
    for i, p in enumerate(PLANETS, 1):
        out.append(record(f"{p.name}是离太阳第几近的行星？", f"{p.name}是离太阳第{zh_number(i)}近的行星。"))
    for d in DYNASTIES:
        if d.founder:
            out.append(record(f"{d.name}是谁建立的？", f"{d.name}是{d.founder}建立的。"))
        if d.capital:
            out.append(record(f"{d.name}的都城在哪里？", f"{d.name}的都城是{d.capital}。"))
    out += [record(q, a) for q, a in FACTS]
    return out


def language_instructions() -> list[Record]:
    out = []
    for i, idiom in enumerate(IDIOMS):
        out.append(record(f"“{idiom.text}”是什么意思？", f"“{idiom.text}”{idiom.meaning}。"))
        if i % 2 == 0:
            out.append(record(f"用“{idiom.text}”造一个句子。", idiom.example))
    for i, (zh, en) in enumerate(WORDS):
        if i % 3 == 0:
            out.append(record(f"“{zh}”用英文怎么说？", f"“{zh}”的英文是{en}。"))
        elif i % 3 == 1:
            out.append(record("把下面的词翻译成英文。", en, input=zh))
        else:
            out.append(record("把下面的词翻译成中文。", zh, input=en))
    for sentence, label in SENTIMENT:
        out.append(record("判断下面这句话的情感是积极还是消极。", label, input=sentence))
    return out


def arithmetic_instructions(rng: random.Random) -> list[Record]:
    out = [record("三加五等于几？", "三加五等于八。")]
    pairs = [(a, b) for a in range(1, 10) for b in range(1, 10) if (a, b) != (3, 5)]
    for a, b in rng.sample(pairs, 12):
        out.append(record(f"{zh_number(a)}加{zh_number(b)}等于几？", plus(a, b) + "。"))
    for a, b in rng.sample(pairs, 12):
        out.append(record(f"{zh_number(a)}乘以{zh_number(b)}等于多少？", times(a, b) + "。"))
    for _ in range(8):
        a, b = rng.randint(10, 60), rng.randint(10, 39)
        out.append(record("计算下面的算式。", f"{a} + {b} = {a + b}", input=f"{a} + {b}"))
    return out


def build_instructions(rng: random.Random) -> list[Record]:
    """All instruction samples: generated ones, then the hand-written ones, in a seeded order."""
    generated = province_instructions() + knowledge_instructions() + language_instructions()
    generated += arithmetic_instructions(rng)
    handwritten = [json.loads(line) for line in read_lines("instructions_handwritten.jsonl")]
    samples = generated + handwritten
    keys = [(s["instruction"], s["input"]) for s in samples]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"instructions asked twice (give each one answer): {repeated}")
    rng.shuffle(samples)
    return samples


# ============================================================================================== corpus
def province_documents(rng: random.Random) -> list[str]:
    docs = []
    for p in PROVINCES:
        status = province_status(p)
        docs.append(f"{p.name}，简称“{p.short}”，位于中国的{p.region}地区，{status}。{p.name}{p.note}"
                    f"{p.name}有名的景点有{p.sights[0]}和{p.sights[1]}，{p.food}是这里的特色美食。")
        opener = rng.choice(("说起{n}，很多人首先想到的是{s}。", "如果你去{n}旅行，一定不要错过{s}。",
                             "我一直想去{n}看看{s}。"))
        centre = f"{p.name}的{capital_word(p)}是{p.capital}。" if p.capital else f"{p.name}{status}。"
        docs.append(opener.format(n=p.name, s=p.sights[0]) + f"{p.name}{p.note}{centre}"
                    f"除了{p.sights[0]}，还可以去{p.sights[1]}走一走。到了{p.name}，别忘了尝一尝{p.food}。"
                    f"{p.name}的简称是“{p.short}”，位于中国的{p.region}地区。")
        qa = [f"问：{p.name}的简称是什么？答：{p.name}的简称是“{p.short}”。"]
        if p.capital:
            qa.append(f"问：{p.name}的{capital_word(p)}是哪里？答：{p.name}的{capital_word(p)}是{p.capital}。")
        qa.append(f"问：{p.name}位于中国的哪个地区？答：{p.name}位于中国的{p.region}地区。")
        qa.append(f"问：{p.name}有哪些有名的景点？答：{p.name}有名的景点有{p.sights[0]}和{p.sights[1]}。")
        docs.append(f"关于{p.name}的小问答。" + "".join(qa))
    for region in REGIONS:
        members = [p for p in PROVINCES if p.region == region]
        text = f"中国的{region}地区包括{join_items([p.name for p in members])}。"
        text += "".join(f"{p.name}的{capital_word(p)}是{p.capital}。" for p in members if p.capital)
        docs.append(text + "".join(f"{p.name}的简称是“{p.short}”。" for p in members))
    docs.append("中国有三十四个省级行政区，包括二十三个省、五个自治区、四个直辖市和两个特别行政区。四个直辖市是北京、天津、"
                "上海和重庆，两个特别行政区是香港和澳门。五个自治区是内蒙古自治区、广西壮族自治区、西藏自治区、宁夏回族自治区和"
                "新疆维吾尔自治区。自治区的中心城市叫作首府，省的中心城市叫作省会。")
    return docs


def city_documents(rng: random.Random) -> list[str]:
    docs = []
    for c in CITIES:
        nick = f"{c.name}又被称为“{c.nickname}”。" if c.nickname else ""
        docs.append(f"{city_intro(c)}{c.name}{c.note}{nick}")
        who = rng.choice(("爸爸", "妈妈", "爷爷", "姐姐", "好朋友"))
        docs.append(f"暑假里，我和{who}去了{c.name}。{c.name}是{city_where(c)}。我们先去看了{c.famous[0]}，"
                    f"又去看了{c.famous[1]}。{c.name}{c.note}回家以后，我在日记里写道：{city_intro(c)}")
    return docs


def season_documents() -> list[str]:
    docs = []
    for i, t in enumerate(SOLAR_TERMS, 1):
        season = ("春天", "夏天", "秋天", "冬天")[(i - 1) // 6]
        docs.append(f"{t.name}是二十四节气中的第{zh_number(i)}个，一般在每年公历{t.month}月{t.day}日前后，属于{season}的节气。"
                    f"{t.name}的时候，{t.meaning}。")
        docs.append(f"问：{t.name}在什么时候？答：{t.name}是二十四节气中的第{zh_number(i)}个，一般在每年公历{t.month}月{t.day}日前后。"
                    f"问：节气“{t.name}”有什么特点？答：{t.name}的时候，{t.meaning}。")
    for k in range(4):
        names = [t.name for t in SOLAR_TERMS[k * 6:(k + 1) * 6]]
        season, months, scene, play = SEASONS[k]
        docs.append(f"{season}的六个节气是{join_items(names)}。{season}一般指{months}。{season}{scene}。"
                    f"{season}里，孩子们喜欢{play}。")
    docs.append("二十四节气是中国古人根据太阳在一年中的位置划分出来的，用来指导农业生产。一年有二十四个节气，每个季节有六个。"
                "二十四节气依次是" + join_items([t.name for t in SOLAR_TERMS]) + "。二十四节气中的第一个节气是立春。")
    return docs


def nature_documents(rng: random.Random) -> list[str]:
    docs = []
    for a in ANIMALS:
        docs.append(f"{a.name}属于{a.kind}，生活在{a.habitat}。{a.name}主要吃{a.food}。{a.name}{a.feature}。"
                    f"{a.name}的英文是{a.english}。")
        place = rng.choice(("动物园", "书上", "电视上", "科技馆的纪录片里"))
        docs.append(f"今天我在{place}看到了{a.name}。{a.name}{a.feature}。老师告诉我们，{a.name}主要吃{a.food}，"
                    f"{a.name}属于{a.kind}。问：{a.name}吃什么？答：{a.name}主要吃{a.food}。")
    for p in PLANTS:
        season = f"{p.name}在{p.season}开花。" if p.season else ""
        docs.append(f"{p.name}{p.note}。{season}{p.name}的英文是{p.english}。")
        docs.append(f"问：介绍一下{p.name}。答：{p.name}{p.note}。{season}")
    for i, p in enumerate(PLANETS, 1):
        docs.append(f"{p.name}是离太阳第{zh_number(i)}近的行星。{p.name}{p.note}。{p.name}的英文名字是{p.english}。")
    docs.append("太阳系有八颗行星，按照离太阳从近到远的顺序，依次是" + join_items([p.name for p in PLANETS])
                + "。太阳系中最大的行星是木星，离太阳最近的行星是水星。")
    return docs


def history_documents() -> list[str]:
    docs = []
    for d in DYNASTIES:
        text = f"{d.name}建立于{d.year}。"
        text += f"{d.name}是{d.founder}建立的。" if d.founder else ""
        text += f"{d.name}的都城是{d.capital}。" if d.capital else ""
        docs.append(text + f"{d.name}{d.note}。")
    docs.append("中国历史上的主要朝代依次是" + join_items([d.name for d in DYNASTIES]) + "。秦朝以前是夏、商、周三代，"
                "清朝以后，中国结束了两千多年的帝制。")
    return docs


def language_documents() -> list[str]:
    docs = []
    for idiom in IDIOMS:
        docs.append(f"成语“{idiom.text}”{idiom.meaning}。这个成语来自一个故事：{idiom.story}")
        docs.append(f"“{idiom.text}”是什么意思？“{idiom.text}”{idiom.meaning}。例如：{idiom.example}")
    for title, lo, hi in WORD_GROUPS:
        words = WORDS[lo:hi]
        docs.append(f"学英语：{title}的说法。" + "".join(f"“{zh}”的英文是{en}。" for zh, en in words)
                    + "反过来，" + "，".join(f"{en}的意思是{zh}" for zh, en in words) + "。")
    return docs


def arithmetic_documents(rng: random.Random) -> list[str]:
    docs = []
    for a in range(1, 10):
        docs.append(f"{zh_number(a)}的加法：" + "，".join(plus(a, b) for b in range(1, 10)) + "。")
        docs.append(f"{zh_number(a)}的乘法：" + "，".join(times(a, b) for b in range(1, 10)) + "。")
    rhymes = [f"{zh_number(a)}{zh_number(b)}{'得' if a * b < 10 else ''}{'一十' if a * b == 10 else zh_number(a * b)}"
              for b in range(1, 10) for a in range(1, b + 1)]
    docs.append("乘法口诀表：" + "，".join(rhymes) + "。")
    for _ in range(60):
        docs.append("数学应用题。" + "".join(word_problem(rng) for _ in range(4)))
    return docs


NAMES = ("小明", "小红", "小华", "小丽", "小刚", "小芳", "小军", "小雨", "小林", "小周", "乐乐", "丁丁")
THINGS = ("苹果", "橘子", "铅笔", "本子", "气球", "糖果", "贴纸", "饼干")


def word_problem(rng: random.Random) -> str:
    """One problem with its answer, e.g. 小明有五个苹果，...一共有八个苹果。"""
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    q = count_word
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(2, 9), rng.randint(1, 9)
        giver = rng.choice(("妈妈", "爸爸", "老师", "奶奶"))
        return (f"问：{name}有{q(a)}个{thing}，{giver}又给了{name}{q(b)}个，{name}现在有几个{thing}？"
                f"答：{plus(a, b)}，{name}现在有{q(a + b)}个{thing}。")
    if kind == 1:
        a = rng.randint(5, 18)
        b = rng.randint(1, a - 1)
        return (f"问：{name}有{q(a)}个{thing}，分给同学{q(b)}个，还剩几个？"
                f"答：{zh_number(a)}减{zh_number(b)}等于{zh_number(a - b)}，还剩{q(a - b)}个{thing}。")
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return (f"问：每盒有{q(a)}个{thing}，{name}买了{q(b)}盒，一共有几个{thing}？"
            f"答：{times(a, b)}，一共有{q(a * b)}个{thing}。")


# Stories: a time, a person and a companion, a place with its scenes and activities, an ending.
TIMES = ("星期天的早上", "一个晴朗的下午", "放暑假的第一天", "国庆节那天", "春天的一个周末", "秋天的一个早晨",
         "寒假里的一天", "一个下着小雨的上午")
COMPANIONS = ("爸爸", "妈妈", "爷爷", "奶奶", "同学", "好朋友", "哥哥", "姐姐")
PLACES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "公园": (("公园里的湖水清清的，岸边的柳树垂下长长的枝条。", "公园里人很多，有人散步，有人放风筝。"),
           ("{n}在草地上跑来跑去，还和{c}一起划了船。", "{n}坐在长椅上，看老爷爷们下象棋。")),
    "图书馆": (("图书馆里安安静静的，只听得见翻书的声音。", "图书馆的书架一排接一排，一眼望不到头。"),
            ("{n}找到了一本讲恐龙的书，看得入了迷。", "{n}借了三本书，准备回家慢慢看。")),
    "菜市场": (("菜市场里热热闹闹的，摊位上摆满了新鲜的蔬菜和水果。", "卖菜的阿姨一边吆喝，一边给客人称菜。"),
            ("{n}帮{c}挑了两斤西红柿和一把青菜。", "{n}第一次自己付钱买菜，觉得自己长大了。")),
    "海边": (("海边的沙滩又软又细，海浪一阵一阵地扑过来。", "海风吹在脸上，带着一点咸咸的味道。"),
           ("{n}在沙滩上堆了一座沙子城堡，还捡了许多贝壳。", "{n}光着脚在浅水里踩浪花，玩得不想回家。")),
    "山上": (("山路弯弯曲曲，路边开满了不知名的野花。", "山上的空气特别清新，鸟儿在树林里唱歌。"),
           ("{n}一口气爬到了山顶，看见山下的房子变得像火柴盒那么小。", "{n}和{c}在半山腰的亭子里休息，喝了几口水。")),
    "博物馆": (("博物馆里陈列着许多古代的文物，有青铜器，也有瓷器。", "博物馆的讲解员讲得很生动。"),
            ("{n}在一件几千年前的青铜鼎前面站了很久。", "{n}认真地听讲解，还在本子上记了好几页笔记。")),
    "外婆家": (("外婆家在农村，门前有一片菜地，屋后有一条小河。", "外婆家的院子里养着几只鸡和一条大黄狗。"),
            ("{n}跟着外婆去菜地里摘黄瓜和豆角。", "{n}帮外婆喂鸡，还学会了生火做饭。")),
    "动物园": (("动物园里有许多动物，大人和孩子都看得津津有味。", "动物园的饲养员正在给动物们喂食。"),
            ("{n}拿着地图，一个馆一个馆地参观。", "{n}在每个动物的笼子前都要停下来看一看介绍牌。")),
    "科技馆": (("科技馆里有许多可以动手玩的展品。", "科技馆的大厅里挂着一个巨大的地球模型。"),
            ("{n}试着用发电的自行车点亮了一排灯泡。", "{n}在天文展厅里认识了太阳系的八颗行星。")),
}
ZOO_ANIMALS = ("大熊猫", "老虎", "狮子", "大象", "长颈鹿", "猴子", "骆驼", "袋鼠", "北极熊", "企鹅", "丹顶鹤", "孔雀",
               "鹦鹉")
ENDINGS = ("回家的路上，{n}说：“今天真开心，下次还要再来！”", "晚上，{n}把今天的事写进了日记里。",
           "{c}问{n}今天学到了什么，{n}说了很多很多。", "这一天过得又快乐又充实。")


def story(rng: random.Random) -> str:
    name, companion = rng.choice(NAMES), rng.choice(COMPANIONS)
    place = rng.choice(sorted(PLACES))
    scenes, activities = PLACES[place]
    text = f"{rng.choice(TIMES)}，{name}和{companion}一起去{place}。{rng.choice(scenes)}{rng.choice(activities)}"
    if place == "公园" or place == "山上":
        plant = rng.choice(PLANTS)
        text += f"路边有{plant.name}，{companion}告诉{{n}}，{plant.name}{plant.note}。"
    elif place == "科技馆":
        planet = rng.choice(PLANETS)
        text += f"{{n}}记住了一件事：{planet.name}{planet.note}。"
    elif place == "动物园":
        animal = rng.choice([a for a in ANIMALS if a.name in ZOO_ANIMALS])
        text += f"{{n}}最喜欢{animal.name}。介绍牌上写着：{animal.name}生活在{animal.habitat}，主要吃{animal.food}。"
    elif place == "外婆家":
        animal = rng.choice([a for a in ANIMALS if a.kind in ("哺乳动物", "鸟类", "两栖动物", "昆虫")])
        text += f"{{n}}还看见了{animal.name}，外婆说{animal.name}主要吃{animal.food}。"
    text += rng.choice(ENDINGS)
    return text.replace("{n}", name).replace("{c}", companion)


def review_documents(rng: random.Random, samples: Sequence[Record], rounds: int = 2, per_doc: int = 6) -> list[str]:
    """Quiz documents "问：...答：..." that show every single-line instruction answer ``rounds`` times."""
    pool = [s for s in samples if "\n" not in s["output"] and "\\n" not in s["output"] + s["instruction"]]
    docs = []
    for _ in range(rounds):
        order = list(pool)
        rng.shuffle(order)
        for i in range(0, len(order), per_doc):
            items = [f"问：{s['instruction']}{s['input']}答：{_end_sentence(s['output'])}" for s in order[i:i + per_doc]]
            docs.append("知识问答。" + "".join(items))
    return docs


def dialogue_documents(conversations: Sequence[Conversation]) -> list[str]:
    """Each conversation as one document "对话。问：...答：...问：...答：..." (the system message left out)."""
    docs = []
    for conv in conversations:
        messages = conv.get("messages") or [
            {"role": {"human": "user", "gpt": "assistant"}.get(m["from"], m["from"]), "content": m["value"]}
            for m in conv["conversations"]
        ]
        prefix = {"user": "问：", "assistant": "答："}
        docs.append("对话。" + "".join(prefix[m["role"]] + _end_sentence(one_line(m["content"]))
                                       for m in messages if m["role"] in prefix))
    return docs


def one_line(text: str) -> str:
    """``text`` without newlines, real or written as a literal backslash-n."""
    return text.replace("\\n", "").replace("\n", "")


def _end_sentence(text: str) -> str:
    return text if text[-1] in "。！？”" else text + "。"


def build_corpus(
    rng: random.Random, instructions: Sequence[Record], conversations: Sequence[Conversation]
) -> list[str]:
    """All corpus documents (one per line), hand-written prose and generated ones, in a seeded order."""
    builders: list[Callable[[], list[str]]] = [
        lambda: province_documents(rng), lambda: city_documents(rng), season_documents,
        lambda: nature_documents(rng), history_documents, language_documents, lambda: arithmetic_documents(rng),
        lambda: [story(rng) for _ in range(300)], lambda: review_documents(rng, instructions),
        lambda: dialogue_documents(conversations),
    ]
    docs = read_lines("corpus_handwritten.txt")
    for build in builders:
        docs += build()
    rng.shuffle(docs)
    return docs


# ============================================================================================== conversations
def province_chat(rng: random.Random, p: Province) -> Conversation:
    turns = [f"我想了解一下{p.name}。", f"{p.name}位于中国的{p.region}地区，简称“{p.short}”。{p.name}{p.note}",
             f"{p.name}有哪些有名的景点？", f"{p.name}有名的景点有{p.sights[0]}和{p.sights[1]}。"]
    if p.capital:
        turns += [f"它的{capital_word(p)}是哪里？", f"{p.name}的{capital_word(p)}是{p.capital}。"]
    turns += ["那里有什么好吃的？", f"{p.food}是{p.name}的特色美食。"]
    return chat(*turns[:rng.choice(range(4, len(turns) + 1, 2))], system=_maybe_system(rng))


def city_chat(rng: random.Random, c: City) -> Conversation:
    turns = [f"介绍一下{c.name}。", city_intro(c), "还有别的特点吗？", f"{c.name}{c.note}"]
    if c.nickname:
        turns += [f"{c.name}有别称吗？", f"有，{c.name}又被称为“{c.nickname}”。"]
    return chat(*turns, system=_maybe_system(rng))


def animal_chat(rng: random.Random, a: Animal) -> Conversation:
    turns = [f"{a.name}吃什么？", f"{a.name}主要吃{a.food}。", "它生活在哪里？", f"{a.name}生活在{a.habitat}。",
             "它属于哪一类动物？", f"{a.name}属于{a.kind}。", "用英文怎么说？", f"{a.name}的英文是{a.english}。"]
    return chat(*turns[:rng.choice((4, 6, 8))], system=_maybe_system(rng))


def idiom_chat(rng: random.Random, idiom: Idiom) -> Conversation:
    turns = [f"“{idiom.text}”是什么意思？", f"“{idiom.text}”{idiom.meaning}。", "能讲讲它的故事吗？", idiom.story,
             "用它造一个句子吧。", idiom.example]
    return chat(*turns[:rng.choice((4, 6))], system=_maybe_system(rng))


def term_chat(rng: random.Random, i: int, t: SolarTerm) -> Conversation:
    season = ("春天", "夏天", "秋天", "冬天")[(i - 1) // 6]
    turns = [f"{t.name}在什么时候？", f"{t.name}是二十四节气中的第{zh_number(i)}个，一般在每年公历{t.month}月{t.day}日前后。",
             "这个时候有什么特点？", f"{t.name}的时候，{t.meaning}。", "它属于哪个季节？", f"{t.name}是{season}的节气。"]
    return chat(*turns[:rng.choice((4, 6))], system=_maybe_system(rng))


def arithmetic_chat(rng: random.Random) -> Conversation:
    a, b, k = rng.randint(1, 9), rng.randint(1, 9), rng.randint(2, 5)
    s = a + b
    turns = [f"{zh_number(a)}加{zh_number(b)}等于几？", f"{plus(a, b)}。",
             f"再乘以{zh_number(k)}呢？", f"{times(s, k)}。",
             f"再减去{zh_number(a)}呢？", f"{zh_number(s * k)}减{zh_number(a)}等于{zh_number(s * k - a)}。"]
    return chat(*turns[:rng.choice((4, 6))], system=_maybe_system(rng))


def word_chat(rng: random.Random) -> Conversation:
    picks = rng.sample(WORDS, 3)
    turns = [f"“{picks[0][0]}”用英文怎么说？", f"“{picks[0][0]}”的英文是{picks[0][1]}。"]
    for zh, en in picks[1:]:
        turns += [f"那“{zh}”呢？", f"“{zh}”的英文是{en}。"]
    return chat(*turns[:rng.choice((4, 6))], system=_maybe_system(rng))


def dynasty_chat(rng: random.Random, d: Dynasty) -> Conversation:
    turns = [f"{d.name}是什么时候建立的？", f"{d.name}建立于{d.year}。"]
    if d.founder:
        turns += ["是谁建立的？", f"{d.name}是{d.founder}建立的。"]
    if d.capital:
        turns += ["它的都城在哪里？", f"{d.name}的都城是{d.capital}。"]
    turns += ["这个朝代有什么特点？", f"{d.name}{d.note}。"]
    return chat(*turns, system=_maybe_system(rng))


def _maybe_system(rng: random.Random) -> str | None:
    return SYSTEM_PROMPT if rng.random() < 0.3 else None


def build_conversations(rng: random.Random) -> list[Conversation]:
    """Generated conversations (2 to 4 exchanges) and the hand-written ones, in a seeded order."""
    convs = [province_chat(rng, p) for p in PROVINCES]
    convs += [city_chat(rng, c) for c in CITIES]
    convs += [animal_chat(rng, a) for a in ANIMALS]
    convs += [idiom_chat(rng, i) for i in IDIOMS[::2]]
    convs += [term_chat(rng, i, t) for i, t in enumerate(SOLAR_TERMS, 1) if i % 2 == 1]
    convs += [dynasty_chat(rng, d) for d in DYNASTIES[3:]]
    convs += [arithmetic_chat(rng) for _ in range(10)] + [word_chat(rng) for _ in range(10)]
    convs += [json.loads(line) for line in read_lines("conversations_handwritten.jsonl")]
    rng.shuffle(convs)
    return convs


# ============================================================================================== output
def demo_prompts(instructions: Iterable[Record]) -> list[Record]:
    """The instruction samples of DEMO_PROMPTS, in that order (each must exist, with an empty input)."""
    by_instruction = {s["instruction"]: s for s in instructions if not s["input"]}
    missing = [p for p in DEMO_PROMPTS if p not in by_instruction]
    if missing:
        raise ValueError(f"demo prompts without an instruction sample: {missing}")
    return [by_instruction[p] for p in DEMO_PROMPTS]


def jsonl(rows: Iterable[object]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def render_files() -> dict[str, bytes]:
    """File name -> exact bytes of every generated file under data/."""
    instructions = build_instructions(random.Random(SEED))
    conversations = build_conversations(random.Random(SEED + 2))
    corpus = build_corpus(random.Random(SEED + 1), instructions, conversations)
    return {
        "zh_corpus.txt": "".join(doc + "\n" for doc in corpus).encode("utf-8"),
        "instructions.jsonl": jsonl(instructions),
        "conversations.jsonl": jsonl(conversations),
        "demo_prompts.jsonl": jsonl(demo_prompts(instructions)),
    }


def differences(files: dict[str, bytes], output_dir: Path) -> list[str]:
    """Names of the files whose content under ``output_dir`` is missing or differs."""
    return [name for name, data in files.items()
            if not (output_dir / name).is_file() or (output_dir / name).read_bytes() != data]


def write_files(files: dict[str, bytes], output_dir: Path) -> None:
    """Write each file atomically (a temporary file renamed into place)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        tmp = output_dir / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(output_dir / name)
        logger.info("%s: %d bytes, %d lines", output_dir / name, len(data), data.count(b"\n"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT, help="where to write (default: data/)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files differ")
    args = parser.parse_args(argv)
    files = render_files()
    if args.check:
        stale = differences(files, args.output_dir)
        for name in stale:
            logger.error("%s differs from what scripts/make_demo_data.py writes; rerun it", args.output_dir / name)
        return 1 if stale else 0
    write_files(files, args.output_dir)
    return 0


if __name__ == "__main__":
    run(main)
