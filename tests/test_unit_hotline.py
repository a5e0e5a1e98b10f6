"""A unit's public hotline: only numbers a citizen can dial reach the cards and the unit page."""

from __future__ import annotations

import re

import httpx
import pytest

from api.models import Unit
from api.seed import DIVISIONS_CSV, load_units
from api.services.context import Services
from api.services.hotlines import normalize_hotline
from tests.support import make_world, staff, staff_token

ADMIN = "/api/v1/admin/units"
CHINESE = re.compile(r"[\u4e00-\u9fff]")


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("12328", "12328"),
        ("12345", "12345"),
        ("110", "110"),
        ("95598", "95598"),
        ("１２３２８", "12328"),
        ("0731-88886666", "0731-88886666"),
        ("073188886666", "0731-88886666"),
        ("0731 8888 6666", "0731-88886666"),
        ("（0731）88886666", "0731-88886666"),
        ("０７３１－８８８８６６６６", "0731-88886666"),
        ("0731—88886666", "0731-88886666"),
        ("+86 731 88886666", "0731-88886666"),
        ("0731-88886666-123", "0731-88886666-123"),
        ("0731-88886666转123", "0731-88886666-123"),
        ("010-62345678", "010-62345678"),
        ("0736-2345678", "0736-2345678"),
        ("+86 138 0013 8000", "13800138000"),
        ("400-820-8820", "400-820-8820"),
        ("8008208820", "800-820-8820"),
    ],
)
def test_real_numbers_are_kept_in_one_spelling(raw: str, stored: str) -> None:
    assert normalize_hotline(raw) == stored


BAD = [
    "' or 1=1",
    "<script>alert(1)</script>",
    "abc",
    "12328\n12345",
    "12328 12345",
    "1",
    "12",
    "12328x",
    "+12328",
    "88886666",  # a landline without its area code
    "0731-12345",  # too short for a local number
    "0731-08886666",
    "010-2345678",  # Beijing numbers have 8 digits
    "0731-88886666-1234567",
    "12800138000",
    "+1 415 555 0100",
    "①②③②⑧",
]


@pytest.mark.parametrize("raw", BAD)
def test_anything_else_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="电话号码无效"):
        normalize_hotline(raw)


async def test_admin_gets_a_field_error_and_nothing_is_stored(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    await staff("demo-admin-4301", "4301", "city_admin")
    admin = await staff_token(client, "demo-admin-4301")
    card = f"/api/v1/cards/{world.card.code}"
    res = await client.put(f"{ADMIN}/430102", json={"hotline": "0731-84110000"}, headers=admin)
    assert res.status_code == 200, res.text
    for bad in BAD:
        res = await client.put(f"{ADMIN}/430102", json={"hotline": bad}, headers=admin)
        assert res.status_code == 422, (bad, res.text)
        error = res.json()["error"]
        assert error["code"] == "validation_failed" and "hotline" in error["message"]
        assert CHINESE.search(error["message"]), error
        fields = error["details"]["fields"]
        assert [(f["field"], f["type"]) for f in fields] == [("hotline", "value_error")]
        assert "电话号码无效" in fields[0]["reason"]
    assert (await Unit.get(code="430102")).hotline == "0731-84110000"
    channels = [c["value"] for c in (await client.get(card)).json()["channels"]]
    assert channels[1] == "0731-84110000" and not any(v in channels for v in BAD)

    # Written as people write it, shown one way.
    res = await client.put(f"{ADMIN}/430102", json={"hotline": "１２３２８"}, headers=admin)
    assert res.status_code == 200 and res.json()["hotline"] == "12328", res.text
    res = await client.put(f"{ADMIN}/430102", json={"hotline": " 0731 8888 6666 "}, headers=admin)
    assert res.json()["hotline"] == "0731-88886666"
    assert (await client.get(card)).json()["channels"][1]["value"] == "0731-88886666"
    page = (await client.get("/api/v1/units/430102")).json()
    assert page["supervision_channels"][1]["value"] == "0731-88886666"


async def test_the_seed_stores_only_numbers_the_admin_endpoint_accepts(clean_db: str) -> None:
    await load_units(DIVISIONS_CSV)
    for hotline, leader in await Unit.all().values_list("hotline", "leader_phone"):
        assert hotline == normalize_hotline(hotline)
        assert re.fullmatch(r"1[3-9]\d{9}", leader)
