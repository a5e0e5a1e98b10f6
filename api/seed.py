"""Reference data and the demo: Hunan's enforcement units, demo officers, cards and staff accounts.

``python -m api.seed`` loads the 149 units; ``python -m api.seed --demo`` also creates the Changsha
demo (officers, printable cards under ``settings.cards_dir``, staff accounts). Both are idempotent.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tortoise.transactions import in_transaction

from api import db, fieldcrypt
from api.integrations.sms import normalize_phone
from api.models import Card, Officer, StaffUser, Unit
from api.services import card_cache
from api.services.cards import card_url, new_card_code, render_card_png
from api.services.hotlines import normalize_hotline
from api.services.passwords import hash_password, verify_password
from api.settings import ROOT, Settings, get_settings

DIVISIONS_CSV = ROOT / "data" / "hunan_divisions.csv"
# Hunan has no provincial enforcement bureau: the 厅's 法制处 oversees enforcement (DOMAIN.md).
PROVINCE_UNIT_NAME = "湖南省交通运输厅（法制处）"
HOTLINE = "12328"
LEVELS = ("province", "city", "county")

DEMO_PASSWORD = "pingyi-demo"
DEMO_CITY = "4301"  # 长沙
DEMO_COUNTY = "430102"  # 芙蓉区
# 天心区: a sibling of 芙蓉区 under the same 支队, so a demo case transferred (转办, only within
# the same supervising unit) still has a demo handler to act on it.
DEMO_SIBLING = "430103"
OFFICERS_PER_COUNTY = 3
OFFICERS_AT_DETACHMENT = 2
OFFICER_NAMES = (
    "王建军", "李卫东", "张志强", "刘海波", "陈立新", "杨晓峰", "赵文华", "黄俊杰",
    "周丽娟", "吴红梅", "徐永刚", "孙振华", "胡国庆", "朱德明", "高春生", "林湘平",
    "何湘君", "郭志勇", "马丽华", "罗建平", "梁晓东", "宋文斌", "郑海燕", "谢长青",
    "韩立军", "唐湘宁", "冯志刚", "彭伟", "邓小芳", "谭雄",
)  # fmt: skip
# (username, role, unit code, display name, phone; None = the unit's leader_phone)
DEMO_STAFF: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("demo-province", "province_admin", "43", "省厅法制处（演示）", "19843000001"),
    ("demo-city-4301", "supervisor", DEMO_CITY, "长沙支队督察（演示）", "19843010001"),
    ("demo-admin-4301", "city_admin", DEMO_CITY, "长沙支队系统管理员（演示）", "19843010002"),
    ("demo-county-430102", "handler", DEMO_COUNTY, "芙蓉大队法制员（演示）", "19843010201"),
    ("demo-leader-430102", "unit_leader", DEMO_COUNTY, "芙蓉大队大队长（演示）", None),
    ("demo-county-430103", "handler", DEMO_SIBLING, "天心大队法制员（演示）", "19843010301"),
)
# An officer who also holds a staff account: cases about them must stay invisible to them.
DEMO_OFFICER_ACCOUNT = ("demo-officer-430102", "handler", "19843010202")


@dataclass(frozen=True)
class Division:
    code: str
    name: str
    parent_code: str | None
    level: str


@dataclass(frozen=True)
class DemoCard:
    code: str
    officer_name: str
    cert_no: str
    unit_code: str
    unit_name: str


def read_divisions(csv_path: Path) -> list[Division]:
    """The GB/T 2260 divisions, parents before children."""
    with csv_path.open(encoding="utf-8-sig", newline="") as f:
        rows = [
            Division(r["code"], r["name"], r["parent_code"] or None, r["level"])
            for r in csv.DictReader(f)
        ]
    return sorted(rows, key=lambda d: (LEVELS.index(d.level), d.code))


def unit_name(division: Division, by_code: dict[str, Division]) -> str:
    if division.level == "province":
        return PROVINCE_UNIT_NAME
    if division.level == "city":
        return f"{division.name}交通运输综合行政执法支队"
    city = by_code[division.parent_code or ""]
    return f"{city.name}{division.name}交通运输综合行政执法大队"


def leader_phone(code: str) -> str:
    """A made-up mobile, distinct per unit: division codes padded to 6 digits are unique."""
    return f"13974{code.ljust(6, '0')}"


def cert_no(unit_code: str, seq: int) -> str:
    """A demo 执法证号, unique province-wide: padded unit code + 2 + sequence (e.g. 43010220001)."""
    return f"{unit_code.ljust(6, '0')}2{seq:04d}"


async def load_units(csv_path: Path) -> int:
    divisions = read_divisions(csv_path)
    by_code = {d.code: d for d in divisions}
    units: dict[str, Unit] = {}
    async with in_transaction():
        for division in divisions:
            units[division.code] = await _upsert_unit(division, by_code, units)
    return len(units)


async def _upsert_unit(
    division: Division, by_code: dict[str, Division], units: dict[str, Unit]
) -> Unit:
    parent = units.get(division.parent_code) if division.parent_code else None
    if division.parent_code and parent is None:
        raise ValueError(f"division {division.code}: unknown parent {division.parent_code}")
    defaults = {
        "name": unit_name(division, by_code),
        "division_name": division.name,
        "level": division.level,
        "parent": parent,
        "path": f"{parent.path if parent else ''}{division.code}/",
        # Through the same checks as an administrator's edit: the seed stores no number the
        # admin endpoint would refuse.
        "leader_phone": normalize_phone(leader_phone(division.code)),
        "hotline": normalize_hotline(HOTLINE),
    }
    unit, _ = await Unit.update_or_create(defaults=defaults, code=division.code)
    return unit


async def seed_demo(settings: Settings) -> dict[str, Any]:
    unit_count = await load_units(DIVISIONS_CSV)
    async with in_transaction():
        officers = await _seed_officers()
        cards = await _seed_cards(officers)
        usernames = await _seed_staff(officers)
    # Files after commit: a rolled-back seed leaves no cards for codes that do not exist.
    index = await asyncio.to_thread(_write_card_files, settings, cards)
    account_cert_no = cert_no(DEMO_COUNTY, 1)
    return {
        "units": unit_count,
        "officers": len(officers),
        "cards": len(cards),
        "card_codes": [c.code for c in cards],
        "staff": usernames,
        "officer_account": {
            "username": DEMO_OFFICER_ACCOUNT[0],
            "cert_no": account_cert_no,
            "card_code": next(c.code for c in cards if c.cert_no == account_cert_no),
        },
        "cards_dir": str(settings.cards_dir),
        "index": str(index),
    }


async def _seed_officers() -> list[tuple[Officer, Unit]]:
    """Officers of the Changsha 支队 and of each of its 大队."""
    units = await Unit.filter(path__startswith=f"43/{DEMO_CITY}/").order_by("code")
    officers: list[tuple[Officer, Unit]] = []
    for unit in units:
        count = OFFICERS_AT_DETACHMENT if unit.level == "city" else OFFICERS_PER_COUNTY
        for seq in range(1, count + 1):
            name = OFFICER_NAMES[len(officers) % len(OFFICER_NAMES)]
            officer, _ = await Officer.update_or_create(
                defaults={"unit": unit, "name": name, "active": True},
                cert_no=cert_no(unit.code, seq),
            )
            officers.append((officer, unit))
    return officers


async def _seed_cards(officers: list[tuple[Officer, Unit]]) -> list[DemoCard]:
    cards: list[DemoCard] = []
    for officer, unit in officers:
        card = await Card.filter(officer=officer, revoked_at=None).order_by("id").first()
        if card is None:
            card = await Card.create(officer=officer, code=new_card_code())
        cards.append(DemoCard(card.code, officer.name, officer.cert_no, unit.code, unit.name))
    return cards


async def _seed_staff(officers: list[tuple[Officer, Unit]]) -> list[str]:
    units = {u.code: u for u in await Unit.filter(code__in=[s[2] for s in DEMO_STAFF])}
    for username, role, code, name, phone in DEMO_STAFF:
        unit = units[code]
        fields = {"role": role, "unit": unit, "name": name, "officer": None}
        await _upsert_staff(username, {**fields, "phone": phone or unit.leader_phone})
    officer, unit = next((o, u) for o, u in officers if o.cert_no == cert_no(DEMO_COUNTY, 1))
    username, role, phone = DEMO_OFFICER_ACCOUNT
    fields = {"role": role, "unit": unit, "name": officer.name, "officer": officer, "phone": phone}
    await _upsert_staff(username, fields)
    return [s[0] for s in DEMO_STAFF] + [username]


async def _upsert_staff(username: str, fields: dict[str, Any]) -> None:
    existing = await StaffUser.get_or_none(username=username)
    password_hash = await asyncio.to_thread(
        _demo_password_hash, existing.password_hash if existing else None
    )
    defaults = {
        **fields,
        "password_hash": password_hash,
        "is_demo": True,
        "is_active": True,
        "failed_logins": 0,
        "locked_until": None,
    }
    await StaffUser.update_or_create(defaults=defaults, username=username)


def _demo_password_hash(current: str | None) -> str:
    """Keep a hash that already verifies, so a rerun does not churn every demo account."""
    if current is not None and verify_password(current, DEMO_PASSWORD):
        return current
    return hash_password(DEMO_PASSWORD)


def _write_card_files(settings: Settings, cards: list[DemoCard]) -> Path:
    entries = []
    for card in cards:
        url = card_url(settings.public_base_url, card.code)
        png = f"{card.cert_no}-{card.code}.png"
        render_card_png(
            url=url,
            path=settings.cards_dir / png,
            officer_name=card.officer_name,
            cert_no=card.cert_no,
            unit_name=card.unit_name,
        )
        entries.append(
            {
                "code": card.code,
                "url": url,
                "officer": card.officer_name,
                "cert_no": card.cert_no,
                "unit_code": card.unit_code,
                "png": png,
            }
        )
    index = settings.cards_dir / "index.json"
    index.write_text(json.dumps(entries, ensure_ascii=False, indent=2), encoding="utf-8")
    return index


async def run(settings: Settings, *, demo: bool) -> None:
    if demo and settings.is_production:
        raise SystemExit("拒绝在生产环境创建演示账号 / refusing demo accounts in production")
    if settings.database_url.startswith("sqlite://"):
        Path(settings.database_url.removeprefix("sqlite://").split("?")[0]).parent.mkdir(
            parents=True, exist_ok=True
        )
    fieldcrypt.configure(settings.field_key, production=settings.is_production)
    await db.migrate(settings.database_url)
    try:
        if demo:
            _print_demo(await seed_demo(settings))
        else:
            count = await load_units(DIVISIONS_CSV)
            print(f"已载入执法单位 {count} 个 / loaded {count} units")
        # Units, officers and cards may have changed under a running API: its card views go.
        await card_cache.invalidate_from_settings(settings)
    finally:
        await db.close_db()


def _print_demo(summary: dict[str, Any]) -> None:
    units, officers, cards = summary["units"], summary["officers"], summary["cards"]
    print(f"执法单位 {units} 个，演示执法人员 {officers} 名，评议卡 {cards} 张")
    print(f"{units} units, {officers} demo officers, {cards} cards")
    print(f"评议卡图片 / card images: {summary['cards_dir']} (index: {summary['index']})")
    accounts = ", ".join(summary["staff"])
    print(f"演示账号（密码 {DEMO_PASSWORD}）/ demo accounts (password {DEMO_PASSWORD}): {accounts}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api.seed", description=__doc__)
    parser.add_argument("--demo", action="store_true", help="also create the Changsha demo data")
    args = parser.parse_args(argv)
    asyncio.run(run(get_settings(), demo=args.demo))


if __name__ == "__main__":
    main()
