"""Building blocks for tests: a small organisation, people in it, and logged-in clients."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import httpx

from api import clock
from api.models import Card, Officer, StaffUser, Unit
from api.seed import load_units
from api.services.cards import new_card_code
from api.services.passwords import hash_password
from api.settings import ROOT

PASSWORD = "pingyi-test-pass"
_nonce = itertools.count()


@lru_cache(maxsize=1)
def password_hash() -> str:
    return hash_password(PASSWORD)


@dataclass
class World:
    officer: Officer  # 芙蓉区大队 (430102)
    card: Card
    other_officer: Officer  # 天心区大队 (430103)
    other_card: Card
    officer_account: StaffUser  # the officer's own staff account


async def staff(
    username: str,
    unit_code: str,
    role: str,
    *,
    officer: Officer | None = None,
    phone: str | None = None,
) -> StaffUser:
    unit = await Unit.get(code=unit_code)
    return await StaffUser.create(
        username=username,
        password_hash=password_hash(),
        name=username,
        role=role,
        unit=unit,
        officer=officer,
        phone=phone,
    )


async def officer_with_card(unit_code: str, name: str, cert_no: str) -> tuple[Officer, Card]:
    unit = await Unit.get(code=unit_code)
    officer = await Officer.create(unit=unit, name=name, cert_no=cert_no)
    card = await Card.create(code=new_card_code(), officer=officer)
    return officer, card


async def make_world() -> World:
    await load_units(ROOT / "data" / "hunan_divisions.csv")
    officer, card = await officer_with_card("430102", "张执法", "43010299001")
    other, other_card = await officer_with_card("430103", "李执法", "43010399001")
    await staff("province", "43", "province_admin")
    await staff("city-4301", "4301", "supervisor", phone="13900004301")
    await staff("county-430102", "430102", "handler", phone="13900430102")
    await staff("county-430103", "430103", "handler")
    account = await staff(
        "officer-430102", "430102", "handler", officer=officer, phone="13700430102"
    )
    return World(officer, card, other, other_card, account)


def dev_code(user: str) -> str:
    return f"dev-{user}-{next(_nonce)}x{clock.now().timestamp():.0f}"


async def citizen_token(client: httpx.AsyncClient, user: str = "citizen1") -> dict[str, str]:
    res = await client.post("/api/v1/auth/wechat", json={"code": dev_code(user)})
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['token']}"}


async def staff_token(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    res = await client.post(
        "/api/v1/staff/auth/login", json={"username": username, "password": PASSWORD}
    )
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['token']}"}


def at(text: str) -> datetime:
    """A moment in China time, e.g. at("2025-03-03 10:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=clock.CHINA)
