"""Tracking a case: every step in plain Chinese, information supplied when asked, one rating,
one re-check with a reason."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx

from api import clock
from api.models import Case, CaseClock
from api.models.clock import ClockStatus
from api.services.context import Services
from api.workers.runner import run_once
from tests.support import at, citizen_token, make_world, staff_token

STAFF_URL = "/api/v1/staff/complaints"
CJK = re.compile(r"[\u4e00-\u9fff]")


async def _file(client: httpx.AsyncClient, headers: dict[str, str], card: str) -> str:
    body = {"card_code": card, "categories": ["RUDE"], "description": "执法人员态度恶劣。"}
    res = await client.post(
        "/api/v1/complaints",
        json=body,
        headers=headers,
    )
    assert res.status_code == 201, res.text
    return str(res.json()["ticket_no"])


async def _staff(
    client: httpx.AsyncClient, headers: dict[str, str], ticket: str, action: str, body: Any = None
) -> dict[str, Any]:
    res = await client.post(f"{STAFF_URL}/{ticket}/{action}", json=body, headers=headers)
    assert res.status_code == 200, res.text
    result: dict[str, Any] = res.json()
    return result


def _assert_plain_chinese(timeline: list[dict[str, Any]], ticket: str) -> None:
    for entry in timeline:
        text = entry["text"].replace(ticket, "")
        assert CJK.search(text), entry
        assert "{" not in text and "}" not in text, entry  # no template left unfilled
        # No codes (reply, first_contact, RUDE …): words in Latin letters have no place here.
        assert not re.search(r"[A-Za-z_]{2,}", text), entry
        assert entry["at"].endswith("+08:00"), entry


async def test_the_citizen_follows_every_step_and_rates_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    citizen = await citizen_token(client)
    ticket = await _file(client, citizen, world.card.code)
    url = f"/api/v1/complaints/{ticket}"
    county = await staff_token(client, "county-430102")

    # Information only when asked.
    res = await client.post(f"{url}/supplements", json={"message": "补充说明"}, headers=citizen)
    assert res.status_code == 409 and res.json()["error"]["code"] == "invalid_state"
    await _staff(client, county, ticket, "acknowledge")
    case = await Case.get(ticket_no=ticket)
    due_before = (await CaseClock.get(case_id=case.id, kind="reply")).due_at
    await _staff(client, county, ticket, "request-info", {"message": "请提供罚单照片"})
    assert (await client.get(url, headers=citizen)).json()["status"] == "waiting"
    clock.advance(timedelta(days=1))  # Tuesday: one working day waiting for the citizen
    res = await client.post(f"{url}/supplements", json={"message": "罚单编号 123"}, headers=citizen)
    assert res.status_code == 200 and res.json()["status"] == "acknowledged", res.text
    reply_clock = await CaseClock.get(case_id=case.id, kind="reply")
    assert reply_clock.status == ClockStatus.RUNNING
    assert reply_clock.due_at - due_before >= timedelta(hours=8)  # the pause does not count

    # A staff session lasts 8 hours: a new working day, a new login.
    county = await staff_token(client, "county-430102")
    city = await staff_token(client, "city-4301")
    await _staff(client, county, ticket, "extension", {"days": 2, "reason": "需调取执法记录仪"})
    await _staff(client, city, ticket, "extension/decision", {"approve": True, "note": "同意"})
    await _staff(client, county, ticket, "reply", {"message": "已批评教育当事执法人员。"})

    # Not satisfied: a re-check, which needs a reason.
    res = await client.post(f"{url}/feedback", json={"satisfied": False}, headers=citizen)
    assert res.status_code == 422
    assert res.json()["error"]["details"]["fields"][0]["field"] == "reason"
    for reason in ("", " ", "好", "理" * 501):
        res = await client.post(
            f"{url}/feedback", json={"satisfied": False, "reason": reason}, headers=citizen
        )
        assert res.status_code == 422, reason
    reason = "只是口头批评，没有处理结果"
    res = await client.post(
        f"{url}/feedback", json={"satisfied": False, "reason": reason}, headers=citizen
    )
    assert res.status_code == 200 and res.json()["status"] == "rechecking", res.text
    assert reason in res.json()["timeline"][-1]["text"]
    # Once: neither a second re-check nor a change of mind.
    for body in ({"satisfied": False, "reason": "还是不满意"}, {"satisfied": True}):
        res = await client.post(f"{url}/feedback", json=body, headers=citizen)
        assert res.status_code == 409 and res.json()["error"]["code"] == "feedback_given"
    staff_view = (await client.get(f"{STAFF_URL}/{ticket}", headers=city)).json()
    assert any(e["data"].get("reason") == reason for e in staff_view["events"])

    await _staff(client, city, ticket, "acknowledge")
    await _staff(client, city, ticket, "reply", {"message": "复核认为原处理适当。"})
    mine = (await client.get(url, headers=citizen)).json()
    assert mine["status"] == "closed"
    res = await client.post(f"{url}/feedback", json={"satisfied": True}, headers=citizen)
    assert res.status_code == 409

    kinds = [e["kind"] for e in mine["timeline"]]
    assert kinds == [
        "received",
        "acknowledged",
        "info_requested",
        "info_supplied",
        "extension_approved",  # the request itself is internal; the citizen is told why
        "replied",
        "feedback_unsatisfied",
        "acknowledged",
        "recheck_replied",
        "closed",
    ], kinds
    _assert_plain_chinese(mine["timeline"], ticket)


async def test_satisfied_closes_and_a_second_rating_is_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    citizen = await citizen_token(client)
    ticket = await _file(client, citizen, world.card.code)
    county = await staff_token(client, "county-430102")
    await _staff(client, county, ticket, "acknowledge")
    await _staff(client, county, ticket, "reply", {"message": "已核实处理。"})
    url = f"/api/v1/complaints/{ticket}/feedback"
    res = await client.post(url, json={"satisfied": True, "comment": "很好"}, headers=citizen)
    assert res.status_code == 200 and res.json()["status"] == "closed"
    res = await client.post(url, json={"satisfied": True}, headers=citizen)
    assert res.status_code == 409 and res.json()["error"]["code"] == "feedback_given"
    res = await client.post(url, json={"satisfied": False, "reason": "想改评价"}, headers=citizen)
    assert res.status_code == 409 and res.json()["error"]["code"] == "feedback_given"


async def test_transfers_escalations_and_deadlines_read_in_plain_chinese(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    citizen = await citizen_token(client)
    ticket = await _file(client, citizen, world.card.code)
    county = await staff_token(client, "county-430102")
    await _staff(client, county, ticket, "transfer", {"unit_code": "430103", "reason": "属地管辖"})
    other = await staff_token(client, "county-430103")
    await _staff(client, other, ticket, "escalate", {"reason": "案情复杂"})
    for _ in range(8):  # the deadlines pass: overdue, then the province supervises
        clock.advance(timedelta(hours=12))
        while await run_once(services):
            pass
    timeline = (await client.get(f"/api/v1/complaints/{ticket}", headers=citizen)).json()[
        "timeline"
    ]
    kinds = {e["kind"] for e in timeline}
    assert {"transferred", "escalated", "sla_overdue", "province_supervise"} <= kinds, kinds
    _assert_plain_chinese(timeline, ticket)
