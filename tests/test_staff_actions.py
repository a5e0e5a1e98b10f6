"""Supervisor actions: contact, request information (pause), notes, transfer, escalate, extension,
close, and two supervisors acting at the same moment."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx

from api import clock
from api.models import CaseClock, CaseEvent, EscalationStep, SmsOutbox, StaffUser
from api.services.audit import verify_chain
from api.services.context import Services
from tests.support import at, citizen_token, make_world, staff, staff_token

URL = "/api/v1/staff/complaints"


async def _case(
    client: httpx.AsyncClient, card_code: str, **extra: object
) -> tuple[str, dict[str, str]]:
    citizen = await citizen_token(client)
    body = {
        "card_code": card_code,
        "categories": ["RUDE"],
        "description": "态度恶劣，语言粗暴。",
        **extra,
    }
    res = await client.post("/api/v1/complaints", json=body, headers=citizen)
    assert res.status_code == 201, res.text
    return res.json()["ticket_no"], citizen


async def _post(
    client: httpx.AsyncClient,
    ticket: str,
    action: str,
    headers: dict[str, str],
    body: dict | None = None,
) -> httpx.Response:
    return await client.post(f"{URL}/{ticket}/{action}", json=body or {}, headers=headers)


async def _reply_due(
    ticket_id_or_no: str, client: httpx.AsyncClient, headers: dict[str, str]
) -> str:
    view = (await client.get(f"{URL}/{ticket_id_or_no}", headers=headers)).json()
    return next(c["due_at"] for c in view["clocks"] if c["clock"] == "reply")


async def test_request_info_pauses_the_reply_clock_until_the_citizen_answers(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))  # Monday
    world = await make_world()
    ticket, citizen = await _case(client, world.card.code)
    county = await staff_token(client, "county-430102")
    assert (
        await _post(client, ticket, "request-info", county, {"message": "请提供罚单照片"})
    ).status_code == 409
    assert (await _post(client, ticket, "acknowledge", county)).status_code == 200
    assert await _reply_due(ticket, client, county) == "2025-03-10T17:30:00+08:00"

    clock.freeze(at("2025-03-04 10:00"))
    county = await staff_token(client, "county-430102")  # a staff session lasts 8 hours
    res = await _post(client, ticket, "request-info", county, {"message": "请提供罚单照片"})
    assert res.status_code == 200 and res.json()["status"] == "waiting"
    reply_clock = await CaseClock.get(case__ticket_no=ticket, kind="reply")
    assert reply_clock.status == "paused"
    assert not await EscalationStep.filter(clock_id=reply_clock.id, status="pending").exists()
    mine = (await client.get(f"/api/v1/complaints/{ticket}", headers=citizen)).json()
    assert (
        mine["status_label"] == "待您补充材料" and "请提供罚单照片" in mine["timeline"][-1]["text"]
    )

    clock.freeze(at("2025-03-06 10:00"))  # two working days later
    county, citizen = await staff_token(client, "county-430102"), await citizen_token(client)
    res = await client.post(
        f"/api/v1/complaints/{ticket}/supplements", json={"message": "照片已上传"}, headers=citizen
    )
    assert res.status_code == 200 and res.json()["status"] == "acknowledged"
    # 13 working hours were paused (Tue 10:00 → Thu 10:00), so the deadline moves by as much.
    assert await _reply_due(ticket, client, county) == "2025-03-12T17:30:00+08:00"
    steps = await EscalationStep.filter(clock_id=reply_clock.id, status="pending").order_by(
        "due_at"
    )
    assert [s.step for s in steps] == ["warn_50", "warn_80", "due", "province", "criticism"]
    assert all(s.generation == 1 for s in steps)
    again = await client.post(
        f"/api/v1/complaints/{ticket}/supplements", json={"message": "再补充"}, headers=citizen
    )
    assert again.status_code == 409


async def test_contact_note_transfer_and_escalate(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    ticket, citizen = await _case(client, world.card.code, phone="13800138000")
    county = await staff_token(client, "county-430102")
    assert (await _post(client, ticket, "acknowledge", county)).status_code == 200
    res = await _post(
        client, ticket, "contact", county, {"outcome": "已电话联系，群众同意等待调查结果"}
    )
    assert res.status_code == 200
    assert {c["clock"]: c["status"] for c in res.json()["clocks"]}["first_contact"] == "stopped"
    res = await _post(client, ticket, "notes", county, {"text": "调取执法记录仪视频"})
    assert res.status_code == 200 and res.json()["events"][-1]["public"] is False
    timeline = (await client.get(f"/api/v1/complaints/{ticket}", headers=citizen)).json()[
        "timeline"
    ]
    assert not any("调取执法记录仪" in e["text"] for e in timeline)

    before = await _reply_due(ticket, client, county)
    assert (
        await _post(client, ticket, "transfer", county, {"unit_code": "430103"})
    ).status_code == 422
    outside = await _post(
        client, ticket, "transfer", county, {"unit_code": "430202", "reason": "管辖错误"}
    )
    assert (
        outside.status_code == 422
        and outside.json()["error"]["details"]["fields"][0]["field"] == "unit_code"
    )
    moved = await _post(
        client, ticket, "transfer", county, {"unit_code": "430103", "reason": "属天心区管辖"}
    )
    assert moved.status_code == 200 and moved.json()["handling_unit"]["code"] == "430103"
    assert (await client.get(f"{URL}/{ticket}", headers=county)).status_code == 404
    tianxin = await staff_token(client, "county-430103")
    assert await _reply_due(ticket, client, tianxin) == before  # transfers never reset the clock
    # The receiving unit's handlers hear of the case as of a new one; it was signed for before
    # the move, so the 签收 deadline has gone and the text asks for it at once.
    told = await SmsOutbox.filter(phone="13900430103", template="new_case").values_list(
        "params", flat=True
    )
    assert [p["ticket"] for p in told] == [ticket] and told[0]["due"] == "尽快"  # type: ignore[index]
    back = await _post(
        client, ticket, "transfer", tianxin, {"unit_code": "430102", "reason": "退回原单位"}
    )
    assert back.status_code == 200
    third = await _post(
        client, ticket, "transfer", county, {"unit_code": "430103", "reason": "再次转办"}
    )
    assert third.status_code == 409 and third.json()["error"]["code"] == "transfer_limit"

    up = await _post(client, ticket, "escalate", county, {"reason": "涉及多个大队"})
    assert up.status_code == 200 and up.json()["handling_unit"]["code"] == "4301"
    assert (await client.get(f"{URL}/{ticket}", headers=county)).status_code == 404


async def test_extension_once_approved_one_level_up(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    ticket, citizen = await _case(client, world.card.code)
    county, city = (
        await staff_token(client, "county-430102"),
        await staff_token(client, "city-4301"),
    )
    await _post(client, ticket, "acknowledge", county)
    assert (
        await _post(client, ticket, "extension", county, {"days": 11, "reason": "需要调查"})
    ).status_code == 422
    res = await _post(
        client, ticket, "extension", county, {"days": 3, "reason": "需调取外地执法记录"}
    )
    assert res.status_code == 200
    again = await _post(client, ticket, "extension", county, {"days": 2, "reason": "还需时间"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "extension_used"
    own = await _post(client, ticket, "extension/decision", county, {"approve": True})
    assert own.status_code == 403  # the handling unit cannot approve its own extension
    res = await _post(client, ticket, "extension/decision", city, {"approve": True, "note": "同意"})
    assert res.status_code == 200
    assert await _reply_due(ticket, client, county) == "2025-03-13T17:30:00+08:00"
    timeline = (await client.get(f"/api/v1/complaints/{ticket}", headers=citizen)).json()[
        "timeline"
    ]
    assert "需调取外地执法记录" in timeline[-1]["text"] and "2025年03月13日" in timeline[-1]["text"]
    twice = await _post(client, ticket, "extension/decision", city, {"approve": False})
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "no_pending_extension"
    assert twice.json()["error"]["details"]["status"] == "acknowledged"


async def test_close_only_after_the_feedback_window(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    ticket, _ = await _case(client, world.card.code)
    county = await staff_token(client, "county-430102")
    await _post(client, ticket, "acknowledge", county)
    await _post(client, ticket, "reply", county, {"message": "已核实处理"})
    early = await _post(client, ticket, "close", county)
    assert early.status_code == 409 and early.json()["error"]["code"] == "feedback_window_open"
    clock.advance(timedelta(days=7, minutes=1))
    res = await _post(client, ticket, "close", await staff_token(client, "county-430102"))
    assert res.status_code == 200 and res.json()["status"] == "closed"
    # The audit entry names the staff member who closed the case.
    closer = await StaffUser.get(username="county-430102")
    entry = await CaseEvent.filter(case__ticket_no=ticket).order_by("-seq").first()
    assert entry is not None
    assert (entry.kind, entry.actor, entry.staff_id) == ("closed_by_staff", "staff", closer.id)
    assert await verify_chain() == []


async def test_two_supervisors_acknowledge_at_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    await staff("county-430102-b", "430102", "handler")
    a, b = await staff_token(client, "county-430102"), await staff_token(client, "county-430102-b")
    for round_ in range(10):  # a fresh case each round: both taps race for the same 签收
        ticket, _ = await _case(client, world.card.code)
        results = await asyncio.gather(
            _post(client, ticket, "acknowledge", a), _post(client, ticket, "acknowledge", b)
        )
        assert sorted(r.status_code for r in results) == [200, 409], (round_, results)
        winner = next(r for r in results if r.status_code == 200).json()
        error = next(r for r in results if r.status_code == 409).json()["error"]
        assert winner["status"] == "acknowledged"
        assert error["code"] == "invalid_state" and error["details"]["status"] == "acknowledged"
        # The loser gets the fresh state: the case as the winner left it.
        fresh = error["details"]["case"]
        assert (fresh["status"], fresh["version"]) == ("acknowledged", winner["version"])
        view = (await client.get(f"{URL}/{ticket}", headers=a)).json()
        assert sum(e["kind"] == "acknowledged" for e in view["events"]) == 1, round_


async def test_reply_templates_follow_the_categories(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    ticket, _ = await _case(client, world.card.code, categories=["NO_BODYCAM", "RUDE"])
    county = await staff_token(client, "county-430102")
    res = await client.get(f"{URL}/{ticket}/reply-templates", headers=county)
    assert res.status_code == 200
    items = res.json()["items"]
    assert [i["category"] for i in items] == ["NO_BODYCAM", "RUDE", "default"]
    assert (
        ticket in items[0]["text"] and "张执法" in items[1]["text"] and "${" not in items[2]["text"]
    )
    other = await staff_token(client, "county-430103")
    assert (await client.get(f"{URL}/{ticket}/reply-templates", headers=other)).status_code == 404


async def test_moves_and_contacts_keep_to_the_rules(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    named, citizen = await _case(client, world.card.code, phone="13800138000")
    anonymous, _ = await _case(client, world.card.code, anonymous=True)
    county, city = (
        await staff_token(client, "county-430102"),
        await staff_token(client, "city-4301"),
    )
    for ticket in (named, anonymous):
        await _post(client, ticket, "acknowledge", county)
    res = await _post(client, anonymous, "contact", county, {"outcome": "电话联系"})
    assert res.status_code == 409 and res.json()["error"]["code"] == "reporter_anonymous"
    early = await _post(
        client,
        named,
        "contact",
        county,
        {"outcome": "电话联系", "contacted_at": "2020-01-01T10:00:00+08:00"},
    )
    assert early.status_code == 422
    up = await _post(
        client, named, "transfer", county, {"unit_code": "4301", "reason": "应由支队办理"}
    )
    assert up.status_code == 422  # up is an escalation, not a transfer

    # A re-check is signed for by the unit above, whose handler then sees the named phone.
    await _post(client, named, "reply", county, {"message": "已核实处理"})
    await client.post(
        f"/api/v1/complaints/{named}/feedback",
        json={"satisfied": False, "reason": "请上级复核"},
        headers=citizen,
    )
    masked = (await client.get(f"{URL}/{named}", headers=city)).json()
    assert masked["reporter"]["phone_masked"]
    assert (await _post(client, named, "acknowledge", city)).status_code == 200
    view = (await client.get(f"{URL}/{named}", headers=city)).json()
    assert view["status"] == "rechecking" and view["reporter"]["phone"] == "13800138000"
    assert (await _post(client, named, "acknowledge", city)).status_code == 409


async def test_no_extension_without_a_unit_above(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    ticket, _ = await _case(client, world.card.code, categories=["BRIBERY"])  # → 支队 4301
    city = await staff_token(client, "city-4301")
    await _post(client, ticket, "acknowledge", city)
    up = await _post(client, ticket, "escalate", city, {"reason": "涉及支队人员，需回避"})
    assert up.status_code == 200 and up.json()["handling_unit"]["code"] == "43"
    assert up.json()["events"][-1]["data"]["reason"] == "涉及支队人员，需回避"
    province = await staff_token(client, "province")
    await _post(client, ticket, "acknowledge", province)
    res = await _post(client, ticket, "extension", province, {"days": 3, "reason": "需要时间"})
    assert res.status_code == 409 and res.json()["error"]["code"] == "no_unit_above"


async def _decided(ticket: str) -> list[tuple[str, dict[str, str]]]:
    rows = await SmsOutbox.filter(case__ticket_no=ticket, template="extension_decided")
    return [(r.phone, r.params) for r in rows]


async def test_extension_requests_and_decisions_reach_the_right_people(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))  # Monday
    world = await make_world()
    county, city = (
        await staff_token(client, "county-430102"),
        await staff_token(client, "city-4301"),
    )
    approved, citizen = await _case(client, world.card.code)
    await _post(client, approved, "acknowledge", county)
    body = {"days": 3, "reason": "需调取外地执法记录"}
    assert (await _post(client, approved, "extension", county, body)).status_code == 200
    # The unit above is asked to decide: its leader (api/seed.py), naming the asking unit.
    [asked] = await SmsOutbox.filter(case__ticket_no=approved, template="approval_needed")
    assert asked.phone == "13974430100" and asked.params["ticket"] == approved
    assert asked.params["unit"] == "长沙市芙蓉区交通运输综合行政执法大队"
    res = await _post(client, approved, "extension/decision", city, {"approve": True})
    assert res.status_code == 200
    # The one who asked hears the decision and the new deadline.
    assert await _decided(approved) == [
        ("13900430102", {"ticket": approved, "result": "已获批准", "due": "03月13日17:30"})
    ]

    # Refused: the deadline stays, the asker is told so, and the citizen sees nothing of it.
    await staff("county-430102-b", "430102", "handler")  # an account without a phone
    other = await staff_token(client, "county-430102-b")
    refused, citizen = await _case(client, world.card.code)
    await _post(client, refused, "acknowledge", other)
    before_timeline = (await client.get(f"/api/v1/complaints/{refused}", headers=citizen)).json()
    before = await _reply_due(refused, client, other)
    assert (await _post(client, refused, "extension", other, body)).status_code == 200
    res = await _post(
        client, refused, "extension/decision", city, {"approve": False, "note": "理由不充分"}
    )
    assert res.status_code == 200
    assert res.json()["events"][-1]["text"] == "延期申请未获批准：理由不充分"
    assert res.json()["events"][-1]["public"] is False
    assert await _reply_due(refused, client, other) == before == "2025-03-10T17:30:00+08:00"
    # Without a phone of the asker's, the unit's handlers hear it — never the accused officer.
    assert await _decided(refused) == [
        ("13900430102", {"ticket": refused, "result": "未获批准", "due": "03月10日17:30"})
    ]
    after_timeline = (await client.get(f"/api/v1/complaints/{refused}", headers=citizen)).json()
    assert after_timeline["timeline"] == before_timeline["timeline"]
    assert after_timeline["deadlines"] == before_timeline["deadlines"]
    again = await _post(client, refused, "extension", other, body)
    assert again.status_code == 409 and again.json()["error"]["code"] == "extension_used"
