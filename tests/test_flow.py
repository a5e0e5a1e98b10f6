"""The whole path on real services: scan → report → supervisor handles → overdue escalates by SMS."""

from __future__ import annotations

from datetime import timedelta

import httpx

from api import clock
from api.fakes.sms import FakeSmsServer
from api.models import EscalationStep, SmsOutbox, Unit
from api.services.context import Services
from api.workers.runner import run_once
from tests.support import at, citizen_token, make_world, staff_token


async def _file(
    client: httpx.AsyncClient, headers: dict[str, str], card_code: str, **extra: object
) -> dict:
    body = {
        "card_code": card_code,
        "categories": ["RUDE"],
        "description": "执法人员态度恶劣，拒绝出示证件。",
    }
    body.update(extra)
    res = await client.post("/api/v1/complaints", json=body, headers=headers)
    assert res.status_code == 201, res.text
    return res.json()


async def test_card_profile_and_categories(client: httpx.AsyncClient, services: Services) -> None:
    world = await make_world()
    res = await client.get(f"/api/v1/cards/{world.card.code}")
    assert res.status_code == 200
    data = res.json()
    assert data["officer"] == {"name": "张执法", "cert_no": "43010299001", "active": True}
    assert data["unit"]["code"] == "430102"
    assert data["unit"]["name"].endswith("交通运输综合行政执法大队")
    assert any(c["value"] == "12328" for c in data["channels"])
    assert (await client.get("/api/v1/cards/ABCDEFGHJKMNPQRS")).status_code == 404
    world.card.revoked_at = clock.now()
    await world.card.save()
    await services.redis.delete(services.key("card", world.card.code))
    res = await client.get(f"/api/v1/cards/{world.card.code}")
    assert res.status_code == 410
    assert res.json()["error"]["code"] == "card_revoked"
    cats = (await client.get("/api/v1/misconduct-categories")).json()["items"]
    assert (
        len(cats) == 14
        and {"code": "VIOLENCE", "label": "暴力执法、人身伤害", "urgency": "urgent"} in cats
    )


async def test_complaint_routed_acknowledged_replied_rechecked(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))  # a Monday
    world = await make_world()
    citizen = await citizen_token(client)
    created = await _file(client, citizen, world.card.code, phone="+86 138 0013 8000")
    ticket = created["ticket_no"]
    dues = {d["clock"]: d["due_at"] for d in created["deadlines"]}
    assert dues == {
        "acknowledge": "2025-03-03T12:00:00+08:00",
        "reply": "2025-03-10T17:30:00+08:00",
        "first_contact": "2025-03-05T17:30:00+08:00",
    }

    county = await staff_token(client, "county-430102")
    inbox = (await client.get("/api/v1/staff/complaints", headers=county)).json()
    assert [c["ticket_no"] for c in inbox["items"]] == [ticket]
    detail = (await client.get(f"/api/v1/staff/complaints/{ticket}", headers=county)).json()
    assert detail["reporter"] == {"anonymous": False, "phone": "138****8000", "phone_masked": True}

    for outsider in ("county-430103", "officer-430102"):
        headers = await staff_token(client, outsider)
        assert (
            await client.get(f"/api/v1/staff/complaints/{ticket}", headers=headers)
        ).status_code == 404
        listed = (await client.get("/api/v1/staff/complaints", headers=headers)).json()["items"]
        assert ticket not in [c["ticket_no"] for c in listed]

    res = await client.post(
        f"/api/v1/staff/complaints/{ticket}/reply", json={"message": "已核实"}, headers=county
    )
    assert res.status_code == 409 and res.json()["error"]["details"]["status"] == "received"
    assert (
        await client.post(f"/api/v1/staff/complaints/{ticket}/acknowledge", headers=county)
    ).status_code == 200
    # Once assigned, the handler sees the phone in full, and that view is in the audit log.
    detail = (await client.get(f"/api/v1/staff/complaints/{ticket}", headers=county)).json()
    assert detail["reporter"]["phone"] == "13800138000"
    assert detail["events"][-1]["kind"] == "identity_viewed" and not detail["events"][-1]["public"]
    city_view = (
        await client.get(
            f"/api/v1/staff/complaints/{ticket}", headers=await staff_token(client, "city-4301")
        )
    ).json()
    assert city_view["reporter"]["phone"] == "138****8000"
    again = await client.post(f"/api/v1/staff/complaints/{ticket}/acknowledge", headers=county)
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"
    message = "经调查，执法人员存在态度问题，已批评教育并责令整改。"
    res = await client.post(
        f"/api/v1/staff/complaints/{ticket}/reply", json={"message": message}, headers=county
    )
    assert res.status_code == 200 and res.json()["status"] == "replied"

    mine = (await client.get(f"/api/v1/complaints/{ticket}", headers=citizen)).json()
    assert mine["can_feedback"] and mine["reply"] == message
    texts = [e["text"] for e in mine["timeline"]]
    assert texts[0].startswith("您的投诉已受理") and "已签收" in texts[1] and message in texts[2]
    assert all(e["at"].endswith("+08:00") for e in mine["timeline"])

    res = await client.post(
        f"/api/v1/complaints/{ticket}/feedback",
        json={"satisfied": False, "comment": "不满意", "reason": "处理过轻，请上级复核"},
        headers=citizen,
    )
    assert res.status_code == 200 and res.json()["status"] == "rechecking"
    assert res.json()["handling_unit"]["code"] == "4301"
    assert {d["clock"]: d["due_at"] for d in res.json()["deadlines"]} == {
        "recheck": "2025-03-10T17:30:00+08:00"
    }

    city = await staff_token(client, "city-4301")
    res = await client.post(
        f"/api/v1/staff/complaints/{ticket}/reply",
        json={"message": "复核维持原处理意见。"},
        headers=city,
    )
    assert res.status_code == 200 and res.json()["status"] == "closed"
    final = (await client.get(f"/api/v1/complaints/{ticket}", headers=citizen)).json()
    assert final["status"] == "closed" and final["deadlines"] == []
    assert "复核答复" in final["timeline"][-2]["text"]


async def test_serious_category_skips_the_officers_unit(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    citizen = await citizen_token(client)
    created = await _file(client, citizen, world.card.code, categories=["BRIBERY", "RUDE"])
    county = await staff_token(client, "county-430102")
    assert (
        await client.get(f"/api/v1/staff/complaints/{created['ticket_no']}", headers=county)
    ).status_code == 404
    city = await staff_token(client, "city-4301")
    detail = (
        await client.get(f"/api/v1/staff/complaints/{created['ticket_no']}", headers=city)
    ).json()
    assert detail["handling_unit"]["code"] == "4301" and detail["discipline_flag"]


async def test_bad_rating_opens_follow_up_case(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    citizen = await citizen_token(client)
    good = await client.post(
        f"/api/v1/cards/{world.other_card.code}/evaluations", json={"level": 5}, headers=citizen
    )
    assert good.status_code == 201 and good.json()["ticket_no"] is None
    bad = await client.post(
        f"/api/v1/cards/{world.card.code}/evaluations",
        json={
            "level": 1,
            "dimensions": {"civility": 1},
            "answers": {"showed_id": False},
            "comment": "态度差",
        },
        headers=citizen,
    )
    assert bad.status_code == 201 and bad.json()["ticket_no"]
    case = (
        await client.get(f"/api/v1/complaints/{bad.json()['ticket_no']}", headers=citizen)
    ).json()
    assert case["kind"] == "bad_rating"
    assert {d["clock"] for d in case["deadlines"]} == {
        "acknowledge",
        "bad_rating_followup",
        "bad_rating_rectify",
    }
    again = await client.post(
        f"/api/v1/cards/{world.card.code}/evaluations", json={"level": 2}, headers=citizen
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_rated"


async def test_another_citizens_case_is_not_found(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    alice, bob = await citizen_token(client, "alice"), await citizen_token(client, "bob")
    ticket = (await _file(client, alice, world.card.code))["ticket_no"]
    res = await client.get(f"/api/v1/complaints/{ticket}", headers=bob)
    assert res.status_code == 404 and res.json()["error"]["code"] == "case_not_found"
    assert (await client.get("/api/v1/complaints", headers=bob)).json()["items"] == []
    res = await client.post(
        f"/api/v1/complaints/{ticket}/feedback", json={"satisfied": True}, headers=bob
    )
    assert res.status_code == 404


async def test_overdue_case_escalates_to_province_once(
    client: httpx.AsyncClient, services: Services, sms_fake: FakeSmsServer
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    citizen = await citizen_token(client)
    ticket = (await _file(client, citizen, world.card.code))["ticket_no"]
    county_leader = (await Unit.get(code="430102")).leader_phone
    city_leader = (await Unit.get(code="4301")).leader_phone
    province_leader = (await Unit.get(code="43")).leader_phone

    for moment in ("2025-03-03 11:00", "2025-03-03 11:40", "2025-03-03 12:00"):  # 50 %, 80 %, due
        clock.freeze(at(moment))
        await run_once(services)
        await run_once(services)
    overdue = await SmsOutbox.filter(template="sla_overdue").values_list("phone", flat=True)
    assert sorted(overdue) == sorted([county_leader, city_leader])
    warnings = await SmsOutbox.filter(template="sla_warning").values_list("phone", flat=True)
    # 50 % and 80 %, to the handler, never to the accused officer's own staff account
    assert sorted(warnings) == ["13900430102", "13900430102"]

    clock.freeze(at("2025-03-04 17:30"))  # one working day after the deadline
    await run_once(services)
    province = await SmsOutbox.filter(template="province_supervise")
    assert [p.phone for p in province] == [province_leader]
    assert province[0].status == "sent"
    sent_to_province = [m for m in sms_fake.received if m["phone"] == province_leader]
    assert len(sent_to_province) == 1 and sent_to_province[0]["params"]["ticket"] == ticket

    clock.advance(timedelta(days=30))
    await run_once(services)
    await run_once(services)
    fired = await EscalationStep.filter(status="fired").values_list("clock__kind", "step")
    assert len(fired) == len(set(fired))
    assert len(sms_fake.received) == await SmsOutbox.filter(status="sent").count()
    assert len({m["out_id"] for m in sms_fake.received}) == len(sms_fake.received)
    expired = await client.get(f"/api/v1/complaints/{ticket}", headers=citizen)
    assert expired.status_code == 401  # a citizen session lasts a week
    view = (
        await client.get(f"/api/v1/complaints/{ticket}", headers=await citizen_token(client))
    ).json()
    assert any("省厅督办" in e["text"] for e in view["timeline"])

    province_admin = await staff_token(client, "province")
    listed = (
        await client.get("/api/v1/admin/sms", params={"ticket_no": ticket}, headers=province_admin)
    ).json()
    assert any(
        item["template"] == "province_supervise" and item["status"] == "sent"
        for item in listed["items"]
    )
    # Paging with the cursor walks the whole outbox, newest first, each row once.
    everything = (await client.get("/api/v1/admin/sms", headers=province_admin)).json()["items"]
    paged: list[int] = []
    cursor: str | None = ""
    while cursor is not None:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/admin/sms", params=params, headers=province_admin)).json()
        paged += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert len(everything) > 2 and paged == [item["id"] for item in everything]
    county = await staff_token(client, "county-430102")
    assert (await client.get("/api/v1/admin/sms", headers=county)).status_code == 403


async def test_new_case_reaches_the_units_handlers_but_not_the_accused(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    ticket = (await _file(client, await citizen_token(client), world.card.code))["ticket_no"]
    notices = await SmsOutbox.filter(template="new_case")
    assert [n.phone for n in notices] == ["13900430102"]  # not 13700430102, the accused's account
    assert (
        notices[0].params["ticket"] == ticket and notices[0].params["due"] == "03月03日12:00前"
    )  # "请03月03日12:00前签收"
