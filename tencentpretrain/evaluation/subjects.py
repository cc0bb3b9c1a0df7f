"""Subject tables of C-Eval and CMMLU: each subject's Chinese name (used in the prompt) and its category.

C-Eval (52 subjects) groups subjects into STEM, Social Science, Humanities and Other. CMMLU (67 subjects) files
each under one of the same four, and marks some as "China specific", reported as an extra group. A subject not
listed here (a custom data set in the same layout) is named by its file name and counted under Other.
"""

from __future__ import annotations

from typing import NamedTuple

STEM, SOC, HUM, OTH = "STEM", "Social Science", "Humanities", "Other"
CATEGORIES = (STEM, SOC, HUM, OTH)
CHINA_SPECIFIC = "China specific"


class Subject(NamedTuple):
    """How a subject is named in a prompt and where it is counted."""

    name_zh: str
    category: str
    china_specific: bool = False


CEVAL_SUBJECTS: dict[str, Subject] = {
    "computer_network": Subject("计算机网络", STEM),
    "operating_system": Subject("操作系统", STEM),
    "computer_architecture": Subject("计算机组成", STEM),
    "college_programming": Subject("大学编程", STEM),
    "college_physics": Subject("大学物理", STEM),
    "college_chemistry": Subject("大学化学", STEM),
    "advanced_mathematics": Subject("高等数学", STEM),
    "probability_and_statistics": Subject("概率统计", STEM),
    "discrete_mathematics": Subject("离散数学", STEM),
    "electrical_engineer": Subject("注册电气工程师", STEM),
    "metrology_engineer": Subject("注册计量师", STEM),
    "high_school_mathematics": Subject("高中数学", STEM),
    "high_school_physics": Subject("高中物理", STEM),
    "high_school_chemistry": Subject("高中化学", STEM),
    "high_school_biology": Subject("高中生物", STEM),
    "middle_school_mathematics": Subject("初中数学", STEM),
    "middle_school_biology": Subject("初中生物", STEM),
    "middle_school_physics": Subject("初中物理", STEM),
    "middle_school_chemistry": Subject("初中化学", STEM),
    "veterinary_medicine": Subject("兽医学", STEM),
    "college_economics": Subject("大学经济学", SOC),
    "business_administration": Subject("工商管理", SOC),
    "marxism": Subject("马克思主义基本原理", SOC),
    "mao_zedong_thought": Subject("毛泽东思想和中国特色社会主义理论体系概论", SOC),
    "education_science": Subject("教育学", SOC),
    "teacher_qualification": Subject("教师资格", SOC),
    "high_school_politics": Subject("高中政治", SOC),
    "high_school_geography": Subject("高中地理", SOC),
    "middle_school_politics": Subject("初中政治", SOC),
    "middle_school_geography": Subject("初中地理", SOC),
    "modern_chinese_history": Subject("近代史纲要", HUM),
    "ideological_and_moral_cultivation": Subject("思想道德修养与法律基础", HUM),
    "logic": Subject("逻辑学", HUM),
    "law": Subject("法学", HUM),
    "chinese_language_and_literature": Subject("中国语言文学", HUM),
    "art_studies": Subject("艺术学", HUM),
    "professional_tour_guide": Subject("导游资格", HUM),
    "legal_professional": Subject("法律职业资格", HUM),
    "high_school_chinese": Subject("高中语文", HUM),
    "high_school_history": Subject("高中历史", HUM),
    "middle_school_history": Subject("初中历史", HUM),
    "civil_servant": Subject("公务员", OTH),
    "sports_science": Subject("体育学", OTH),
    "plant_protection": Subject("植物保护", OTH),
    "basic_medicine": Subject("基础医学", OTH),
    "clinical_medicine": Subject("临床医学", OTH),
    "urban_and_rural_planner": Subject("注册城乡规划师", OTH),
    "accountant": Subject("注册会计师", OTH),
    "fire_engineer": Subject("注册消防工程师", OTH),
    "environmental_impact_assessment_engineer": Subject("环境影响评价工程师", OTH),
    "tax_accountant": Subject("税务师", OTH),
    "physician": Subject("医师资格", OTH),
}

CMMLU_SUBJECTS: dict[str, Subject] = {
    "agronomy": Subject("农学", OTH),
    "anatomy": Subject("解剖学", STEM),
    "ancient_chinese": Subject("古汉语", SOC, china_specific=True),
    "arts": Subject("艺术学", HUM),
    "astronomy": Subject("天文学", STEM),
    "business_ethics": Subject("商业伦理", SOC),
    "chinese_civil_service_exam": Subject("中国公务员考试", SOC, china_specific=True),
    "chinese_driving_rule": Subject("中国驾驶规则", OTH, china_specific=True),
    "chinese_food_culture": Subject("中国饮食文化", SOC, china_specific=True),
    "chinese_foreign_policy": Subject("中国外交政策", SOC, china_specific=True),
    "chinese_history": Subject("中国历史", HUM, china_specific=True),
    "chinese_literature": Subject("中国文学", HUM, china_specific=True),
    "chinese_teacher_qualification": Subject("中国教师资格", SOC, china_specific=True),
    "clinical_knowledge": Subject("临床知识", OTH),
    "college_actuarial_science": Subject("大学精算学", STEM),
    "college_education": Subject("大学教育学", SOC),
    "college_engineering_hydrology": Subject("大学工程水文学", STEM),
    "college_law": Subject("大学法律", HUM),
    "college_mathematics": Subject("大学数学", STEM),
    "college_medical_statistics": Subject("大学医学统计", STEM),
    "college_medicine": Subject("大学医学", OTH),
    "computer_science": Subject("计算机科学", STEM),
    "computer_security": Subject("计算机安全", OTH),
    "conceptual_physics": Subject("概念物理学", STEM),
    "construction_project_management": Subject("建设工程管理", OTH, china_specific=True),
    "economics": Subject("经济学", SOC),
    "education": Subject("教育学", SOC),
    "electrical_engineering": Subject("电气工程", STEM),
    "elementary_chinese": Subject("小学语文", SOC, china_specific=True),
    "elementary_commonsense": Subject("小学常识", OTH, china_specific=True),
    "elementary_information_and_technology": Subject("小学信息技术", OTH),
    "elementary_mathematics": Subject("初等数学", STEM),
    "ethnology": Subject("民族学", SOC, china_specific=True),
    "food_science": Subject("食品科学", OTH),
    "genetics": Subject("遗传学", STEM),
    "global_facts": Subject("全球事实", HUM),
    "high_school_biology": Subject("高中生物", STEM),
    "high_school_chemistry": Subject("高中化学", STEM),
    "high_school_geography": Subject("高中地理", SOC),
    "high_school_mathematics": Subject("高中数学", STEM),
    "high_school_physics": Subject("高中物理学", STEM),
    "high_school_politics": Subject("高中政治", SOC, china_specific=True),
    "human_sexuality": Subject("人类性行为", OTH),
    "international_law": Subject("国际法学", HUM),
    "journalism": Subject("新闻学", SOC),
    "jurisprudence": Subject("法理学", HUM),
    "legal_and_moral_basis": Subject("法律与道德基础", OTH),
    "logical": Subject("逻辑学", HUM),
    "machine_learning": Subject("机器学习", STEM),
    "management": Subject("管理学", SOC),
    "marketing": Subject("市场营销", SOC),
    "marxist_theory": Subject("马克思主义理论", HUM),
    "modern_chinese": Subject("现代汉语", SOC, china_specific=True),
    "nutrition": Subject("营养学", OTH),
    "philosophy": Subject("哲学", HUM),
    "professional_accounting": Subject("专业会计", SOC),
    "professional_law": Subject("专业法学", HUM),
    "professional_medicine": Subject("专业医学", OTH),
    "professional_psychology": Subject("专业心理学", SOC),
    "public_relations": Subject("公共关系", SOC),
    "security_study": Subject("安全研究", SOC),
    "sociology": Subject("社会学", SOC),
    "sports_science": Subject("体育学", OTH),
    "traditional_chinese_medicine": Subject("中医中药", OTH, china_specific=True),
    "virology": Subject("病毒学", STEM),
    "world_history": Subject("世界历史", HUM),
    "world_religions": Subject("世界宗教", HUM),
}

BENCHMARK_SUBJECTS = {"ceval": CEVAL_SUBJECTS, "cmmlu": CMMLU_SUBJECTS}


def subject_info(benchmark: str, name: str) -> Subject:
    """The table entry of ``name``; unknown subjects get their file name (underscores as spaces) and Other."""
    table = BENCHMARK_SUBJECTS.get(benchmark, {})
    return table.get(name) or Subject(name.replace("_", " "), OTH)


def subject_groups(benchmark: str, name: str) -> tuple[str, ...]:
    """The report groups a subject counts in: its category, plus "China specific" where CMMLU says so."""
    info = subject_info(benchmark, name)
    return (info.category, CHINA_SPECIFIC) if info.china_specific else (info.category,)
