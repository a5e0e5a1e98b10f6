"""Clock rules (issue 3, "Clocks"): an extension after a fired warning, urgent limits and urgent SMS
at night, the reason an extension needs, and each case's own profile deciding its quiet hours."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import time, timedelta

import httpx
import pytest

from api import clock
from api.fakes.sms import FakeSmsServer
from api.models import Case, CaseClock, EscalationStep, SmsOutbox
from api.models.clock import StepStatus
from api.services.context import Services
from api.services.escalation import fire_pass
from api.sla.policy import QuietHours
from api.workers.sms_sender import send_due_sms
from tests.support import at, citizen_token, make_world, staff_token

URL = "/api/v1/staff/complaints"


@pytest.fixture(autouse=True)
def _no_new_case_notices(services: Services) -> Iterator[None]:
    services.settings.notify_new_cases = False
    yield
    services.settings.notify_new_cases = True


async def _file(client: httpx.AsyncClient, card: str, categories: list[str]) -> str:
    citizen = await citizen_token(client)
    body = {"card_code": card, "categories": categories, "description": "执法人员动手打人。"}
    res = await client.post("/api/v1/complaints", json=body, headers=citizen)
    assert res.status_code == 201, res.text
    return str(res.json()["ticket_no"])


async def _steps(ticket: str, kind: str) -> dict[str, list[EscalationStep]]:
    case = await Case.get(ticket_no=ticket)
    rows = await EscalationStep.filter(case_id=case.id, clock__kind=kind).order_by("id")
    by_name: dict[str, list[EscalationStep]] = {}
    for row in rows:
        by_name.setdefault(row.step, []).append(row)
    return by_name


async def test_extension_after_a_fired_warning_moves_only_the_pending_steps(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))  # Monday; reply due Monday 03-10 17:30
    world = await make_world()
    ticket = await _file(client, world.card.code, ["RUDE"])
    county, city = (
        await staff_token(client, "county-430102"),
        await staff_token(client, "city-4301"),
    )
    assert (await client.post(f"{URL}/{ticket}/acknowledge", headers=county)).status_code == 200
    before = await _steps(ticket, "reply")
    (warn_50,) = before["warn_50"]
    clock.freeze(warn_50.due_at + timedelta(minutes=1))
    assert (await fire_pass(services)).fired == 1
    warned = await SmsOutbox.filter(purpose="reply:warn_50").count()
    assert warned == 1  # the handler of 芙蓉区大队 (never the accused officer's own account)
    county, city = (
        await staff_token(client, "county-430102"),
        await staff_token(client, "city-4301"),
    )

    res = await client.post(
        f"{URL}/{ticket}/extension",
        json={"days": 3, "reason": "需调取外地执法记录"},
        headers=county,
    )
    assert res.status_code == 200, res.text
    res = await client.post(
        f"{URL}/{ticket}/extension/decision", json={"approve": True, "note": "同意"}, headers=city
    )
    assert res.status_code == 200, res.text
    reply = await CaseClock.get(case__ticket_no=ticket, kind="reply")
    assert clock.iso(reply.due_at) == "2025-03-13T17:30:00+08:00"

    after = await _steps(ticket, "reply")
    # The fired warning stays the one row it was: not re-created, never to fire again.
    assert [(s.id, s.status) for s in after["warn_50"]] == [(warn_50.id, StepStatus.FIRED)]
    for name in ("warn_80", "due", "province", "criticism"):
        old, new = before[name][0], after[name][-1]
        assert old.status == StepStatus.PENDING and new.status == StepStatus.PENDING
        assert (await EscalationStep.get(id=old.id)).status == StepStatus.CANCELLED
        assert new.due_at > old.due_at, name  # moved with the deadline
        assert [s.status for s in after[name]].count(StepStatus.PENDING) == 1
    assert after["due"][-1].due_at == reply.due_at

    # Run the whole ladder out: the warning never fires a second time.
    clock.freeze(at("2025-04-30 10:00"))
    while (await fire_pass(services)).claimed:
        pass
    fired = await EscalationStep.filter(clock_id=reply.id, status=StepStatus.FIRED).values_list(
        "step", flat=True
    )
    assert sorted(fired) == sorted(["warn_50", "warn_80", "due", "province", "criticism"])
    assert await SmsOutbox.filter(purpose="reply:warn_50").count() == 1


async def test_violence_runs_on_the_urgent_limit_and_its_sms_ignore_quiet_hours(
    client: httpx.AsyncClient, services: Services, sms_fake: FakeSmsServer
) -> None:
    clock.freeze(at("2025-03-03 21:00"))  # Monday evening; the deadlines fall at 23:00
    world = await make_world()
    urgent = await _file(client, world.card.code, ["VIOLENCE"])
    routine = await _file(client, world.card.code, ["RUDE"])
    case = await Case.get(ticket_no=urgent)
    assert case.urgency == "urgent"
    kinds = {k.kind: clock.iso(k.due_at) for k in await CaseClock.filter(case_id=case.id)}
    # 2 natural hours for the reply (12328: 即接即转即办), not 5 working days.
    assert kinds == {
        "acknowledge": "2025-03-03T23:00:00+08:00",
        "reply_urgent": "2025-03-03T23:00:00+08:00",
    }
    leader_told = await SmsOutbox.filter(case_id=case.id, purpose="urgent_case").get()
    assert leader_told.urgent and leader_told.next_attempt_at == at("2025-03-03 21:00")

    clock.freeze(at("2025-03-03 23:00"))
    while (await fire_pass(services)).claimed:
        pass
    urgent_due = await SmsOutbox.filter(case__ticket_no=urgent, purpose__endswith=":due")
    routine_due = await SmsOutbox.filter(case__ticket_no=routine, purpose__endswith=":due")
    assert {r.purpose for r in urgent_due} == {"acknowledge:due", "reply_urgent:due"}
    assert all(r.urgent and r.next_attempt_at == at("2025-03-03 23:00") for r in urgent_due)
    assert routine_due and all(
        not r.urgent and r.next_attempt_at == at("2025-03-04 07:00") for r in routine_due
    )
    services.settings.sms_digest_seconds = 0
    try:
        while await send_due_sms(services, limit=50):
            pass
    finally:
        services.settings.sms_digest_seconds = 300
    sent = {m["out_id"] for m in sms_fake.received}
    assert {r.out_id for r in urgent_due} <= sent  # sent at 23:00
    assert not {r.out_id for r in routine_due} & sent  # waiting for 07:00


async def test_an_extension_needs_a_reason(client: httpx.AsyncClient, services: Services) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    ticket = await _file(client, world.card.code, ["RUDE"])
    county = await staff_token(client, "county-430102")
    await client.post(f"{URL}/{ticket}/acknowledge", headers=county)
    for body in ({"days": 3}, {"days": 3, "reason": ""}, {"days": 3, "reason": "  "}):
        res = await client.post(f"{URL}/{ticket}/extension", json=body, headers=county)
        assert res.status_code == 422, (body, res.text)
        assert res.json()["error"]["code"] == "validation_failed"
    case = await Case.get(ticket_no=ticket)
    assert case.extension_count == 0  # nothing was requested


async def test_escalation_sms_keep_the_quiet_hours_of_the_cases_own_profile(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 21:00"))
    world = await make_world()
    night = await _file(client, world.card.code, ["RUDE"])
    day = await _file(client, world.card.code, ["RUDE"])
    # A profile without quiet hours, as a province may run; the first case was opened under it.
    services.profiles["no-quiet"] = replace(
        services.policy,
        name="no-quiet",
        quiet_hours=QuietHours(enabled=False, start=time(22), end=time(7)),
    )
    try:
        await Case.filter(ticket_no=night).update(sla_profile="no-quiet")
        clock.freeze(at("2025-03-03 23:00"))
        while (await fire_pass(services)).claimed:
            pass
    finally:
        del services.profiles["no-quiet"]
    own = await SmsOutbox.filter(case__ticket_no=night, purpose="acknowledge:due")
    default = await SmsOutbox.filter(case__ticket_no=day, purpose="acknowledge:due")
    assert own and all(r.next_attempt_at == at("2025-03-03 23:00") for r in own)
    assert default and all(r.next_attempt_at == at("2025-03-04 07:00") for r in default)


async def test_a_throttled_routine_sms_retries_within_its_cases_quiet_hours(
    client: httpx.AsyncClient, services: Services, sms_fake: FakeSmsServer
) -> None:
    clock.freeze(at("2025-03-03 19:50"))
    world = await make_world()
    night = await _file(client, world.card.code, ["RUDE"])
    day = await _file(client, world.card.code, ["RUDE"])
    services.profiles["no-quiet"] = replace(
        services.policy,
        name="no-quiet",
        quiet_hours=QuietHours(enabled=False, start=time(22), end=time(7)),
    )
    services.settings.sms_digest_seconds = 0
    try:
        await Case.filter(ticket_no=night).update(sla_profile="no-quiet")
        clock.freeze(at("2025-03-03 21:59:50"))  # the 签收 deadlines fell at 21:50
        while (await fire_pass(services)).claimed:
            pass
        rows = await SmsOutbox.filter(purpose="acknowledge:due").count()
        sms_fake.fail_next("isv.BUSINESS_LIMIT_CONTROL", times=rows)
        while await send_due_sms(services, limit=50):
            pass
    finally:
        del services.profiles["no-quiet"]
        services.settings.sms_digest_seconds = 300
    own = await SmsOutbox.filter(case__ticket_no=night, purpose="acknowledge:due")
    default = await SmsOutbox.filter(case__ticket_no=day, purpose="acknowledge:due")
    assert own and default
    for row in own:  # retried after the backoff (15–18 s), at night: its profile has no quiet hours
        assert row.status == "pending" and row.attempts == 1
        assert at("2025-03-03 22:00") <= row.next_attempt_at < at("2025-03-03 22:01")
    assert all(r.next_attempt_at == at("2025-03-04 07:00") for r in default)
