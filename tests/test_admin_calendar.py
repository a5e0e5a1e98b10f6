"""Administration: calendar overrides, unit contacts, the unknown-year alert, the 回访 clock."""

from __future__ import annotations

from datetime import timedelta

import httpx

from api import clock
from api.models import Case, CaseClock, SmsOutbox, Unit
from api.models.clock import ClockStatus
from api.services.context import Services
from tests.support import at, citizen_token, file_cases, make_world, staff, staff_token

ADMIN = "/api/v1/admin"
STAFF = "/api/v1/staff/complaints"


async def _due(ticket: str, kind: str) -> str:
    row = await CaseClock.get(case__ticket_no=ticket, kind=kind)
    return clock.iso(row.due_at) or ""


def _field(res: httpx.Response) -> str:
    return str(res.json()["error"]["details"]["fields"][0]["field"])


async def test_calendar_overrides_take_effect_at_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-02-28 10:00"))  # Friday
    world = await make_world()
    province = await staff_token(client, "province")
    year = (await client.get(f"{ADMIN}/calendar", params={"year": 2025}, headers=province)).json()
    assert year["known"] and len(year["days"]) == 365 and year["overrides"] == []
    sunday = next(d for d in year["days"] if d["date"] == "2025-01-26")  # 调休 workday
    assert sunday == {"date": "2025-01-26", "is_workday": True, "source": "official", "note": ""}
    unknown = (await client.get(f"{ADMIN}/calendar?year=2027", headers=province)).json()
    assert not unknown["known"] and {d["source"] for d in unknown["days"]} == {"fallback"}
    assert not services.unknown_years  # looking at the calendar raises no alert

    await services.calendar(services.policy)  # a cached calendar, dropped by the change below
    [before] = await file_cases(services, world, 1)
    assert await _due(before, "reply") == "2025-03-07T17:30:00+08:00"
    res = await client.put(
        f"{ADMIN}/calendar/2025-03-03",
        json={"is_workday": False, "note": "临时停工"},
        headers=province,
    )
    assert res.status_code == 200, res.text
    assert res.json() == {
        "date": "2025-03-03",
        "is_workday": False,
        "source": "override",
        "note": "临时停工",
    }
    [after] = await file_cases(services, world, 1)
    assert await _due(after, "reply") == "2025-03-10T17:30:00+08:00"
    assert await _due(before, "reply") == "2025-03-07T17:30:00+08:00"  # not moved
    res = await client.put(
        f"{ADMIN}/calendar/2025-03-03", json={"is_workday": True}, headers=province
    )
    assert res.json()["note"] == "" and res.json()["is_workday"] is True  # upsert
    listed = (await client.get(f"{ADMIN}/calendar?year=2025", headers=province)).json()
    assert [o["date"] for o in listed["overrides"]] == ["2025-03-03"]

    for bad in ("2025-02-30", "2025-3-3", "20250303", "1999-01-01"):
        res = await client.put(
            f"{ADMIN}/calendar/{bad}", json={"is_workday": True}, headers=province
        )
        assert res.status_code == 422 and _field(res) == "date", (bad, res.text)
    for body in ({"is_workday": "yes"}, {}, {"is_workday": True, "extra": 1}):
        res = await client.put(f"{ADMIN}/calendar/2025-03-04", json=body, headers=province)
        assert res.status_code == 422, (body, res.text)
    res = await client.put(
        f"{ADMIN}/calendar/2025-03-04",
        content=b"{",
        headers={**province, "Content-Type": "application/json"},
    )
    assert res.status_code == 400 and res.json()["error"]["code"] == "invalid_json"
    assert (await client.get(f"{ADMIN}/calendar?year=1999", headers=province)).status_code == 422

    city = await staff_token(client, "city-4301")
    for method, path in (
        ("GET", "/calendar?year=2025"),
        ("PUT", "/calendar/2025-03-04"),
        ("DELETE", "/calendar/2025-03-03"),
    ):
        res = await client.request(method, ADMIN + path, json={"is_workday": True}, headers=city)
        assert res.status_code == 403, (method, path, res.text)

    res = await client.delete(f"{ADMIN}/calendar/2025-03-03", headers=province)
    assert res.status_code == 200 and res.json()["source"] == "official"
    assert (
        await client.delete(f"{ADMIN}/calendar/2025-03-03", headers=province)
    ).status_code == 404


async def test_unit_contacts_are_normalised_and_scoped(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    await staff("city-admin-4301", "4301", "city_admin")
    province = await staff_token(client, "province")
    res = await client.put(
        f"{ADMIN}/units/4301", json={"leader_phone": "+86 138 0013 8000"}, headers=province
    )
    assert res.status_code == 200, res.text
    assert res.json()["leader_phone"] == "13800138000"
    assert (await Unit.get(code="4301")).leader_phone == "13800138000"
    for bad in ("12345", "+1 415 555 0100", "138001380001"):
        res = await client.put(f"{ADMIN}/units/4301", json={"leader_phone": bad}, headers=province)
        assert res.status_code == 422 and _field(res) == "leader_phone", (bad, res.text)
    assert (await Unit.get(code="4301")).leader_phone == "13800138000"
    assert (await client.put(f"{ADMIN}/units/9999", json={}, headers=province)).status_code == 404

    card = f"/api/v1/cards/{world.card.code}"
    assert (await client.get(card)).status_code == 200  # the profile is now cached
    city_admin = await staff_token(client, "city-admin-4301")
    res = await client.put(
        f"{ADMIN}/units/430102", json={"hotline": "0731-84000000"}, headers=city_admin
    )
    assert res.status_code == 200 and res.json()["hotline"] == "0731-84000000"
    channels = (await client.get(card)).json()["channels"]
    assert "0731-84000000" in [c["value"] for c in channels]  # the cache was dropped
    res = await client.put(f"{ADMIN}/units/430102", json={"hotline": None}, headers=city_admin)
    assert res.json()["hotline"] is None and res.json()["leader_phone"]  # phone untouched
    for outside in ("4302", "43"):
        res = await client.put(
            f"{ADMIN}/units/{outside}", json={"hotline": "1"}, headers=city_admin
        )
        assert res.status_code == 404, (outside, res.text)
    supervisor = await staff_token(client, "city-4301")
    res = await client.put(f"{ADMIN}/units/430102", json={"hotline": "1"}, headers=supervisor)
    assert res.status_code == 403


async def test_unknown_year_falls_back_and_alerts_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2027-03-05 10:00"))  # a Friday in a year chinesecalendar does not know
    world = await make_world()
    province = await staff_token(client, "province")
    res = await client.put(
        f"{ADMIN}/units/43", json={"leader_phone": "13800000043"}, headers=province
    )
    assert res.status_code == 200, res.text
    tickets = await file_cases(services, world, 6)
    assert {await _due(t, "reply") for t in tickets} == {"2027-03-12T17:30:00+08:00"}
    await services.settle_alerts()
    health = (await client.get("/healthz")).json()
    assert health["details"]["calendar_unknown_years"] == [2027]

    # A "restart": the process forgets what it saw; the outbox row still says it was sent.
    services.forget_calendars()
    services.unknown_years.clear()
    await file_cases(services, world, 3)
    await services.settle_alerts()
    alerts = await SmsOutbox.filter(template="calendar_alert")
    assert len(alerts) == 1
    assert alerts[0].phone == "13800000043" and alerts[0].params == {"year": "2027"}
    listed = (await client.get(f"{ADMIN}/sms", headers=province)).json()["items"]
    text = next(i["text"] for i in listed if i["template"] == "calendar_alert")
    assert text == "工作日历缺少2027年国务院放假安排，已按周一至周五计算，请维护日历。"


async def test_revisit_clock_starts_only_when_closed_unrated(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))  # Monday
    world = await make_world()
    citizen = await citizen_token(client)
    county = await staff_token(client, "county-430102")
    tickets = []
    for _ in range(2):
        body = {"card_code": world.card.code, "categories": ["RUDE"], "description": "态度恶劣。"}
        res = await client.post("/api/v1/complaints", json=body, headers=citizen)
        assert res.status_code == 201, res.text
        ticket = res.json()["ticket_no"]
        tickets.append(ticket)
        for action, payload in (("acknowledge", {}), ("reply", {"message": "已核实处理"})):
            res = await client.post(f"{STAFF}/{ticket}/{action}", json=payload, headers=county)
            assert res.status_code == 200, res.text
    unrated, rated = tickets
    res = await client.post(
        f"/api/v1/complaints/{rated}/feedback", json={"satisfied": True}, headers=citizen
    )
    assert res.status_code == 200, res.text
    assert (await Case.get(ticket_no=rated)).close_reason == "satisfied"
    assert not await CaseClock.filter(case__ticket_no=rated, kind="revisit").exists()

    clock.advance(timedelta(days=7, minutes=1))  # Monday 03-10 10:01, the window is over
    county = await staff_token(client, "county-430102")
    res = await client.post(f"{STAFF}/{unrated}/close", json={}, headers=county)
    assert res.status_code == 200, res.text
    revisit = await CaseClock.get(case__ticket_no=unrated, kind="revisit")
    assert revisit.status == ClockStatus.RUNNING
    assert clock.iso(revisit.due_at) == "2025-03-12T17:30:00+08:00"  # 2 working days
