"""Misconduct categories (DOMAIN.md) and what follows from them: urgency and independent routing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    code: str
    label: str
    urgency: str  # normal | high | urgent
    discipline: bool = False  # also flagged for the discipline channel (纪检)


CATEGORIES: dict[str, Category] = {
    c.code: c
    for c in (
        Category("NO_ID", "未出示执法证件、未按规定着装或无执法资格", "normal"),
        Category("NO_BODYCAM", "未使用执法记录仪", "normal"),
        Category("ARBITRARY_STOP", "随意拦车、扣车、扣证，任性检查", "normal"),
        Category("ILLEGAL_FINE", "乱罚款（不开票、多罚少开、顶格重罚）", "normal"),
        Category("ILLEGAL_FEE", "乱收费（保管费、护送费等）", "normal"),
        Category("BRIBERY", "吃拿卡要、索贿受贿、人情案关系案", "high", discipline=True),
        Category("RUDE", "态度恶劣、冷横硬推、语言不文明", "normal"),
        Category("VIOLENCE", "暴力执法、人身伤害", "urgent"),
        Category("NO_HEARING", "不听辩解、不告知权利、只罚不教", "normal"),
        Category("ALCOHOL", "工作时间饮酒、酒后执法", "high"),
        Category("AUX_ALONE", "辅助人员单独执法", "normal"),
        Category("SCALPER", "勾结“黄牛”、中介", "high"),
        Category("VEHICLE_MISUSE", "违规使用执法车辆、警灯警报", "normal"),
        Category("OTHER", "其他问题（请描述）", "normal"),
    )
}

# Serious categories skip the officer's own unit and go to the unit above, for independence.
SERIOUS = frozenset({"BRIBERY", "VIOLENCE", "ALCOHOL", "SCALPER"})

_RANK = {"normal": 0, "high": 1, "urgent": 2}


def urgency_of(codes: list[str]) -> str:
    return max((CATEGORIES[c].urgency for c in codes), key=_RANK.__getitem__, default="normal")


def needs_discipline(codes: list[str]) -> bool:
    return any(CATEGORIES[c].discipline for c in codes)


def is_serious(codes: list[str]) -> bool:
    return any(c in SERIOUS for c in codes)
