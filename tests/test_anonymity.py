"""Anonymity after submission: on for good, effective for everything not yet shown or sent."""

from __future__ import annotations

import httpx
import pytest

from api import clock
from api.models import Case, CaseClock, SmsOutbox
from api.models.clock import ClockStatus
from api.models.outbox import OutboxStatus
from api.services.audit import verify_chain
from api.services.context import Services
from api.services.outbox import enqueue_sms
from api.services.redaction import without_numbers
from tests.support import at, citizen_token, make_world, staff_token

PHONE = "13812348000"
STAFF_URL = "/api/v1/staff/complaints"


async def _file(
    client: httpx.AsyncClient, headers: dict[str, str], card: str, **extra: object
) -> str:
    body = {"card_code": card, "categories": ["RUDE"], "description": "执法人员态度恶劣。", **extra}
    res = await client.post("/api/v1/complaints", json=body, headers=headers)
    assert res.status_code == 201, res.text
    return str(res.json()["ticket_no"])


def _anonymity(ticket: str) -> str:
    return f"/api/v1/complaints/{ticket}/anonymity"


async def test_turning_anonymity_on_hides_the_reporter_from_then_on(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    citizen = await citizen_token(client)
    ticket = await _file(client, citizen, world.card.code, phone=PHONE, location="韶山北路口")
    county = await staff_token(client, "county-430102")
    assert (
        await client.post(f"{STAFF_URL}/{ticket}/acknowledge", headers=county)
    ).status_code == 200
    seen = (await client.get(f"{STAFF_URL}/{ticket}", headers=county)).json()
    assert seen["reporter"] == {"anonymous": False, "phone": PHONE, "phone_masked": False}
    assert seen["location"] == "韶山北路口"
    case = await Case.get(ticket_no=ticket)
    # Something addressed to the reporter, queued before the switch (not sent yet).
    queued = await enqueue_sms(
        services,
        phone=PHONE,
        template="new_case",
        params={"ticket": ticket},
        purpose="reporter",
        case_id=case.id,
    )

    res = await client.post(_anonymity(ticket), json={"anonymous": True}, headers=citizen)
    assert res.status_code == 200, res.text
    mine = res.json()
    assert mine["anonymous"] is True and mine["location"] == "韶山北路口"  # the citizen's own view
    assert mine["timeline"][-1]["kind"] == "made_anonymous"
    assert "匿名" in mine["timeline"][-1]["text"]

    case = await Case.get(ticket_no=ticket)
    assert case.anonymous and case.contact_phone is None  # cleared, not hidden
    first_contact = await CaseClock.get(case_id=case.id, kind="first_contact")
    assert first_contact.status == ClockStatus.STOPPED  # nobody may call an anonymous reporter
    row = await SmsOutbox.get(id=queued.id)
    assert row.status == OutboxStatus.FAILED and row.last_error == "reporter turned anonymous"
    assert await verify_chain(case.id) == []

    for who in ("county-430102", "city-4301", "province"):
        view = (
            await client.get(f"{STAFF_URL}/{ticket}", headers=await staff_token(client, who))
        ).json()
        assert view["reporter"] == {"anonymous": True}
        assert view["location"] is None and view["location_withheld"] is True
        assert PHONE not in str(view) and "8000" not in str(view["reporter"])
    res = await client.post(
        f"{STAFF_URL}/{ticket}/contact", json={"outcome": "电话回访"}, headers=county
    )
    assert res.status_code == 409 and res.json()["error"]["code"] == "reporter_anonymous"

    # Again: nothing new. Back to named: refused, for good.
    events = len(mine["timeline"])
    again = await client.post(_anonymity(ticket), json={"anonymous": True}, headers=citizen)
    assert again.status_code == 200 and len(again.json()["timeline"]) == events
    back = await client.post(_anonymity(ticket), json={"anonymous": False}, headers=citizen)
    assert back.status_code == 409
    assert back.json()["error"]["code"] == "anonymity_irreversible"
    assert (await Case.get(ticket_no=ticket)).anonymous


async def test_anonymity_is_the_reporters_own_business(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    citizen = await citizen_token(client, "alice")
    ticket = await _file(client, citizen, world.card.code, phone=PHONE)
    other = await citizen_token(client, "mallory")
    for url, headers in (
        (_anonymity(ticket), other),
        (_anonymity("PY25030300000000"), citizen),
        (_anonymity("not-a-ticket"), citizen),
    ):
        res = await client.post(url, json={"anonymous": True}, headers=headers)
        assert res.status_code == 404 and res.json()["error"]["code"] == "case_not_found"
    county = await staff_token(client, "county-430102")
    res = await client.post(_anonymity(ticket), json={"anonymous": True}, headers=county)
    assert res.status_code == 401
    res = await client.post(_anonymity(ticket), json={"anonymous": True})
    assert res.status_code == 401
    for body in ({}, {"anonymous": "yes"}, {"anonymous": 1}, {"anonymous": True, "x": 1}):
        res = await client.post(_anonymity(ticket), json=body, headers=citizen)
        assert res.status_code == 422, body
    # Named and asked to stay named: nothing to do.
    res = await client.post(_anonymity(ticket), json={"anonymous": False}, headers=citizen)
    assert res.status_code == 200 and res.json()["anonymous"] is False
    assert not (await Case.get(ticket_no=ticket)).anonymous


async def test_named_phone_is_full_for_the_handler_only(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    citizen = await citizen_token(client)
    ticket = await _file(client, citizen, world.card.code, phone=PHONE)
    county = await staff_token(client, "county-430102")
    await client.post(f"{STAFF_URL}/{ticket}/acknowledge", headers=county)
    full = (await client.get(f"{STAFF_URL}/{ticket}", headers=county)).json()["reporter"]
    assert full == {"anonymous": False, "phone": PHONE, "phone_masked": False}
    for who in ("city-4301", "province"):
        headers = await staff_token(client, who)
        view = (await client.get(f"{STAFF_URL}/{ticket}", headers=headers)).json()
        assert view["reporter"] == {
            "anonymous": False,
            "phone": "138****8000",
            "phone_masked": True,
        }
        assert PHONE not in str(view)
    officer = await staff_token(client, "officer-430102")
    assert (await client.get(f"{STAFF_URL}/{ticket}", headers=officer)).status_code == 404
    inbox = (await client.get(STAFF_URL, headers=officer)).json()
    assert ticket not in str(inbox)


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("请回电 139 1234 5678", "请回电 （已隐去）"),
        ("或139-1234-5678。", "或（已隐去）。"),
        ("电话：１３９－１２３４－５６７８", "电话：（已隐去）"),
        ("+86 138 0013 8000 / 0086-13800138000", "（已隐去） / （已隐去）"),
        ("masked 138****8000", "masked （已隐去）"),
        ("座机0731-88886666或(0731) 8888 6666", "座机（已隐去）或（已隐去）"),
        ("请联系我 １３９．１２３４．５６７８ 谢谢", "请联系我 （已隐去） 谢谢"),
        ("139\u00a01234\u00a05678、139·1234·5678", "（已隐去）、（已隐去）"),
        ("139/1234/5678 139_1234_5678 139*1234*5678", "（已隐去） （已隐去） （已隐去）"),
        (
            "139 ‐ 1234 ‐ 5678，13912\u200b345678，13912\u00ad345678",
            "（已隐去），（已隐去），（已隐去）",
        ),
        ("+86 731 8888 6666、731-88886666、8888-6666", "（已隐去）、（已隐去）、（已隐去）"),
        ("+86（139）12345678，（13912345678）", "（已隐去），（已隐去）"),
        ("一三九一二三四五六七八 ۱۳۹۱۲۳۴۵۶۷۸", "（已隐去） （已隐去）"),
        # Not phone numbers: ticket numbers, dates, times, amounts and the 12328 hotline stay.
        ("案件PY26120460967860", "案件PY26120460967860"),
        ("2026-12-04 13:45 罚款200元，拨打12328", "2026-12-04 13:45 罚款200元，拨打12328"),
        (
            "湘A12345 执法证号43010012，第一二三条，扣 3 分",
            "湘A12345 执法证号43010012，第一二三条，扣 3 分",
        ),
    ],
)
def test_numbers_are_withheld_however_they_were_typed(written: str, shown: str) -> None:
    assert without_numbers(written) == shown
