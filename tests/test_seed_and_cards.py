"""Units, demo seed, card codes and QR images, staff password hashing."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zxingcpp
from argon2.profiles import CHEAPEST
from PIL import Image

from api.models import Card, Officer, StaffUser, Unit
from api.seed import DIVISIONS_CSV, load_units, seed_demo
from api.services import auth, passwords
from api.services.cards import (
    CODE_ALPHABET,
    card_url,
    new_card_code,
    normalize_card_code,
    render_card_png,
)
from api.services.context import Services
from api.settings import Settings, get_settings
from tests.support import citizen_token

MOBILE = re.compile(r"^1[3-9]\d{9}$")
BASE_URL = "https://pingyi.test.example.cn"
DEMO_USERS = {
    "demo-province": ("province_admin", "43"),
    "demo-city-4301": ("supervisor", "4301"),
    "demo-admin-4301": ("city_admin", "4301"),
    "demo-county-430102": ("handler", "430102"),
    "demo-leader-430102": ("unit_leader", "430102"),
    "demo-county-430103": ("handler", "430103"),  # a sibling unit: where 430102 transfers to
    "demo-officer-430102": ("handler", "430102"),
}


@pytest.fixture
def cheap_hashing() -> Iterator[None]:
    passwords.use_parameters(CHEAPEST)
    yield
    passwords.use_parameters()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return get_settings().model_copy(
        update={"cards_dir": tmp_path / "cards", "public_base_url": BASE_URL + "/"}
    )


def decode_qr(path: Path) -> list[str]:
    with Image.open(path) as image:
        return [b.text for b in zxingcpp.read_barcodes(image)]


# --- units -------------------------------------------------------------------------------------


async def test_load_units_builds_the_hunan_tree(clean_db: str) -> None:
    assert await load_units(DIVISIONS_CSV) == 149
    units = {u.code: u for u in await Unit.all()}
    assert Counter(u.level for u in units.values()) == {"province": 1, "city": 14, "county": 134}

    province = units["43"]
    assert (province.name, province.path, province.parent_id) == (
        "湖南省交通运输厅（法制处）",
        "43/",
        None,
    )
    changsha = units["4301"]
    assert changsha.name == "长沙市交通运输综合行政执法支队"
    assert (changsha.path, changsha.parent_id, changsha.division_name) == (
        "43/4301/",
        province.id,
        "长沙市",
    )
    furong = units["430102"]
    assert furong.name == "长沙市芙蓉区交通运输综合行政执法大队"
    assert (furong.path, furong.parent_id, furong.division_name) == (
        "43/4301/430102/",
        changsha.id,
        "芙蓉区",
    )

    by_id = {u.id: u for u in units.values()}
    for unit in units.values():
        assert unit.hotline == "12328"
        if unit.level == "county":
            parent = by_id[unit.parent_id or 0]
            assert parent.level == "city"
            assert unit.path == f"{parent.path}{unit.code}/"
            assert unit.name.startswith(parent.division_name)
    phones = [u.leader_phone or "" for u in units.values()]
    assert all(MOBILE.match(p) for p in phones)
    assert len(set(phones)) == 149


async def test_load_units_is_idempotent(clean_db: str) -> None:
    await load_units(DIVISIONS_CSV)
    before = {u.code: (u.id, u.name, u.path, u.parent_id, u.leader_phone) for u in await Unit.all()}
    assert await load_units(DIVISIONS_CSV) == 149
    after = {u.code: (u.id, u.name, u.path, u.parent_id, u.leader_phone) for u in await Unit.all()}
    assert after == before


# --- demo seed ---------------------------------------------------------------------------------


async def test_seed_demo_creates_officers_cards_and_accounts(
    clean_db: str, settings: Settings, cheap_hashing: None
) -> None:
    summary = await seed_demo(settings)

    changsha = await Unit.filter(path__startswith="43/4301/")
    assert len(changsha) == 10
    for unit in changsha:
        minimum = 2 if unit.level == "city" else 3
        assert await Officer.filter(unit=unit).count() >= minimum
    officers = await Officer.all()
    assert len({o.cert_no for o in officers}) == len(officers) == summary["officers"]
    assert all(re.fullmatch(r"43\d{4}2\d{4}", o.cert_no) for o in officers)
    for officer in officers:
        assert await Card.filter(officer=officer).count() == 1
    assert sorted(summary["card_codes"]) == sorted(await Card.all().values_list("code", flat=True))

    for username, (role, unit_code) in DEMO_USERS.items():
        staff = await StaffUser.get(username=username).prefetch_related("unit")
        assert (staff.role, staff.unit.code, staff.is_demo) == (role, unit_code, True)
        assert staff.password_hash.startswith("$argon2id$")
        assert passwords.verify_password(staff.password_hash, "pingyi-demo")
        assert MOBILE.match(staff.phone or "")
    officer_account = await StaffUser.get(username="demo-officer-430102").prefetch_related(
        "officer"
    )
    assert officer_account.officer is not None
    assert officer_account.officer.cert_no == summary["officer_account"]["cert_no"]
    assert officer_account.officer.unit_id == (await Unit.get(code="430102")).id
    assert await StaffUser.filter(username__startswith="demo-", officer=None).count() == 6


async def test_seed_demo_rerun_creates_no_duplicates(
    clean_db: str, settings: Settings, cheap_hashing: None
) -> None:
    first = await seed_demo(settings)
    hashes = dict(await StaffUser.all().values_list("username", "password_hash"))
    second = await seed_demo(settings)

    assert sorted(second["card_codes"]) == sorted(first["card_codes"])
    assert (await Unit.all().count(), await Officer.all().count()) == (149, first["officers"])
    assert await Card.all().count() == first["cards"] == first["officers"]
    assert dict(await StaffUser.all().values_list("username", "password_hash")) == hashes
    assert await StaffUser.all().count() == len(DEMO_USERS)


async def test_seed_demo_writes_decodable_cards_and_an_index(
    clean_db: str, settings: Settings, cheap_hashing: None
) -> None:
    summary = await seed_demo(settings)

    index = json.loads((settings.cards_dir / "index.json").read_text(encoding="utf-8"))
    assert sorted(e["code"] for e in index) == sorted(summary["card_codes"])
    entry = index[0]
    assert entry["png"] == f"{entry['cert_no']}-{entry['code']}.png"
    assert entry["url"] == f"{BASE_URL}/c/{entry['code']}"
    assert set(entry) == {"code", "url", "officer", "cert_no", "unit_code", "png"}
    assert len(list(settings.cards_dir.glob("*.png"))) == len(index)
    assert decode_qr(settings.cards_dir / entry["png"]) == [f"{BASE_URL}/c/{entry['code']}"]


async def test_a_demo_case_transferred_to_the_sibling_unit_has_a_demo_handler(
    client: httpx.AsyncClient, services: Services, tmp_path: Path, cheap_hashing: None
) -> None:
    settings = services.settings.model_copy(update={"cards_dir": tmp_path / "cards"})
    summary = await seed_demo(settings)
    card = next(e for e in _index(settings) if e["unit_code"] == "430102")
    citizen = await citizen_token(client)
    body = {"card_code": card["code"], "categories": ["RUDE"], "anonymous": False}
    body["description"] = "执法人员态度恶劣，拒绝出示证件。"
    res = await client.post("/api/v1/complaints", json=body, headers=citizen)
    assert res.status_code == 201, res.text
    ticket = res.json()["ticket_no"]

    county, sibling = await _demo_login(client, "430102"), await _demo_login(client, "430103")
    case_url = f"/api/v1/staff/complaints/{ticket}"
    transfer = {"unit_code": "430103", "reason": "事发地属天心区，转天心大队办理"}
    res = await client.post(f"{case_url}/transfer", json=transfer, headers=county)
    assert res.status_code == 200, res.text
    res = await client.post(f"{case_url}/acknowledge", headers=sibling)
    assert res.status_code == 200, res.text

    # Like every demo account, production refuses to start while it exists.
    assert "demo-county-430103" in summary["staff"]
    with pytest.raises(RuntimeError, match="demo-county-430103"):
        await auth.refuse_demo_accounts()


def _index(settings: Settings) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = json.loads((settings.cards_dir / "index.json").read_text())
    return entries


async def _demo_login(client: httpx.AsyncClient, unit_code: str) -> dict[str, str]:
    body = {"username": f"demo-county-{unit_code}", "password": "pingyi-demo"}
    res = await client.post("/api/v1/staff/auth/login", json=body)
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['token']}"}


# --- card codes and images ---------------------------------------------------------------------


def test_new_card_code_is_long_unambiguous_and_random() -> None:
    codes = {new_card_code() for _ in range(1000)}
    assert len(codes) == 1000
    for code in codes:
        assert len(code) == 16
        assert set(code) <= set(CODE_ALPHABET)
        assert not set(code) & set("01OIL")
    assert len(CODE_ALPHABET) ** 16 >= 2**79


def test_normalize_card_code() -> None:
    code = new_card_code()
    assert normalize_card_code(code) == code
    assert normalize_card_code(f"  {code.lower()}\n") == code
    assert normalize_card_code(code[:-1]) is None
    assert normalize_card_code(code + "2") is None
    assert normalize_card_code("O" + code[1:]) is None
    assert normalize_card_code("1" + code[1:]) is None
    assert normalize_card_code("L" + code[1:]) is None
    assert normalize_card_code("") is None
    assert normalize_card_code("ABCD-EFGH-JKMN-PQ") is None


def test_card_url_has_no_double_slash() -> None:
    assert card_url("https://a.example.cn/", "ABC") == "https://a.example.cn/c/ABC"
    assert card_url("https://a.example.cn", "ABC") == "https://a.example.cn/c/ABC"


@pytest.mark.parametrize("font", [None, "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"])
def test_render_card_png_decodes_with_or_without_caption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, font: str | None
) -> None:
    if font is not None:
        if not Path(font).is_file():
            pytest.skip("no TrueType font to exercise the caption")
        monkeypatch.setenv("PINGYI_CARD_FONT", font)
    url = card_url(BASE_URL, new_card_code())
    path = render_card_png(
        url=url,
        path=tmp_path / "sub" / "card.png",
        officer_name="王建军",
        cert_no="43010220001",
        unit_name="长沙市芙蓉区交通运输综合行政执法大队",
    )
    assert path == tmp_path / "sub" / "card.png"
    assert decode_qr(path) == [url]
    with Image.open(path) as image:
        assert image.width >= 300
        if font is not None:
            assert image.height > image.width  # the caption sits below the QR
    assert [p.name for p in path.parent.iterdir()] == ["card.png"]  # no temp file left


# --- passwords ---------------------------------------------------------------------------------


def test_passwords_verify_and_reject(cheap_hashing: None) -> None:
    hashed = passwords.hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert passwords.verify_password(hashed, "correct horse")
    assert not passwords.verify_password(hashed, "Correct horse")
    assert not passwords.verify_password("not-a-hash", "correct horse")
    assert not passwords.verify_password("", "")
    assert not passwords.verify_password("$argon2id$v=19$m=8,t=1,p=1$garbage", "x")
    assert not passwords.needs_rehash(hashed)
    assert passwords.needs_rehash("not-a-hash")
    passwords.dummy_verify("anything")


def test_hash_made_with_other_parameters_still_verifies_but_needs_rehash(
    cheap_hashing: None,
) -> None:
    cheap = passwords.hash_password("pw")
    passwords.use_parameters()
    assert passwords.verify_password(cheap, "pw")
    assert passwords.needs_rehash(cheap)
