"""Firing a claimed batch of escalation steps in a few set-based statements (issue 3, benchmark):
the same outcome as firing them one by one, and the per-step path when a batch fails."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from api import clock
from api.models import Case, CaseClock, CaseEvent, EscalationStep, SmsOutbox
from api.models.case import CaseStatus
from api.models.clock import ClockStatus, StepStatus
from api.services import escalation, escalation_batch
from api.services.audit import verify_chain
from api.services.context import Services
from api.services.escalation import fire_due_steps
from api.services.timeline import NewEvent, record_event, record_events
from tests.support import at, file_cases, make_world

CASES = 12
ESCALATION_EVENTS = ("sla_warning", "sla_overdue", "province_supervise", "criticism")


@pytest.fixture(autouse=True)
def _no_new_case_notices(services: Services) -> Iterator[None]:
    services.settings.notify_new_cases = False
    yield
    services.settings.notify_new_cases = True


class _Statements(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


async def _fire_counting(services: Services, limit: int) -> tuple[int, int]:
    logger, counter = logging.getLogger("tortoise.db_client"), _Statements()
    level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        fired = await fire_due_steps(services, limit=limit)
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
    return fired, counter.count


async def _outcome() -> dict[str, Any]:
    steps = await EscalationStep.all().order_by("id").values_list("id", "status")
    sms = await SmsOutbox.filter(step_id__isnull=False).order_by("step_id", "phone")
    events = await CaseEvent.filter(kind__in=ESCALATION_EVENTS).order_by("case_id", "seq")
    return {
        "steps": steps,
        "sms": [(r.step_id, r.phone, r.template, r.purpose, r.urgent, r.params) for r in sms],
        "events": [(e.case_id, e.kind, e.public, e.text) for e in events],
        "breached": await CaseClock.filter(breached_at__isnull=False).count(),
    }


async def _ladder_due(services: Services) -> None:
    """CASES complaints filed at 10:00; at 11:50 the 签收 warnings (50 %, 80 %) are due on time."""
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    await file_cases(services, world, CASES)
    clock.freeze(at("2025-03-03 11:50"))


async def test_a_batch_fires_like_one_by_one_in_a_few_statements(services: Services) -> None:
    await _ladder_due(services)
    fired, statements = await _fire_counting(services, limit=200)
    assert fired == CASES * 2  # warn_50 and warn_80 of each 签收 clock
    assert statements <= 15, statements  # not ~11 per step
    batched = await _outcome()
    # The warnings went to the unit's handler, never to the accused officer's own account.
    assert {phone for _, phone, *_ in batched["sms"]} == {"13900430102"}
    assert len(batched["sms"]) == CASES * 2 and len(batched["events"]) == CASES * 2
    assert await verify_chain() == []

    # The same data fired one by one (the fallback path) writes the same rows.
    for step in await EscalationStep.filter(status=StepStatus.FIRED):
        step.status, step.fired_at = StepStatus.PENDING, None
        await step.save(update_fields=["status", "fired_at"])
    await SmsOutbox.all().delete()
    alone = 0
    for step in await escalation.due_steps(limit=200):
        alone += await escalation._fire_alone(services, step)
    assert alone == fired
    again = await _outcome()
    assert again["steps"] == batched["steps"] and again["sms"] == batched["sms"]
    assert sorted(again["events"]) == sorted(batched["events"] * 2)
    assert await verify_chain() == []


async def test_deadline_breaches_notifies_leaders_and_late_warnings_stay_silent(
    services: Services,
) -> None:
    await _ladder_due(services)
    clock.freeze(at("2025-03-03 12:00"))  # 签收 deadline: the warnings fire late, with it
    fired = await fire_due_steps(services, limit=200)
    assert fired == CASES * 3
    assert await SmsOutbox.filter(template="sla_warning").count() == 0
    assert await CaseEvent.filter(kind="sla_warning").count() == 0
    overdue = await SmsOutbox.filter(template="sla_overdue")
    assert len(overdue) == CASES * 2  # the county's and the city's leaders
    assert await CaseClock.filter(kind="acknowledge", breached_at=clock.now()).count() == CASES
    assert await CaseEvent.filter(kind="sla_overdue").count() == CASES
    assert await verify_chain() == []


async def test_steps_of_a_closed_case_or_stopped_clock_are_cancelled(services: Services) -> None:
    await _ladder_due(services)
    cases = await Case.all().order_by("id")
    await Case.filter(id=cases[0].id).update(status=CaseStatus.CLOSED)
    await CaseClock.filter(case_id=cases[1].id).update(status=ClockStatus.STOPPED)
    fired = await fire_due_steps(services, limit=200)
    assert fired == (CASES - 2) * 2
    for case in cases[:2]:
        statuses = await EscalationStep.filter(case_id=case.id, due_at__lte=clock.now())
        assert {s.status for s in statuses} == {StepStatus.CANCELLED}
        assert not await SmsOutbox.filter(case_id=case.id).exists()
        assert not await CaseEvent.filter(case_id=case.id, kind="sla_warning").exists()


async def test_urgent_cases_send_urgent_sms(services: Services) -> None:
    await _ladder_due(services)
    urgent = (await Case.all().order_by("id"))[0].id
    await Case.filter(id=urgent).update(urgency="urgent")
    await fire_due_steps(services, limit=200)
    rows = await SmsOutbox.filter(step_id__isnull=False)
    assert {r.urgent for r in rows if r.case_id == urgent} == {True}
    assert {r.urgent for r in rows if r.case_id != urgent} == {False}


async def test_a_failing_batch_falls_back_to_one_step_at_a_time(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _ladder_due(services)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("poison")

    monkeypatch.setattr(escalation_batch, "plan_step", broken)
    assert await fire_due_steps(services, limit=200) == CASES * 2
    assert await EscalationStep.filter(status=StepStatus.FIRED).count() == CASES * 2
    rows = await SmsOutbox.filter(step_id__isnull=False)
    assert len(rows) == len({r.step_id for r in rows}) == CASES * 2  # nothing half-written
    assert await verify_chain() == []
    assert await fire_due_steps(services, limit=200) == 0  # exactly once


async def test_a_lost_claim_undoes_the_batch(services: Services) -> None:
    await _ladder_due(services)
    steps = await escalation.due_steps(limit=200)
    await EscalationStep.filter(id=steps[0].id).update(status=StepStatus.FIRED)  # another worker
    with pytest.raises(escalation_batch.ClaimLost):
        async with in_transaction() as conn:
            await escalation_batch.fire_batch(services, steps, conn)
    assert await EscalationStep.filter(status=StepStatus.FIRED).count() == 1  # all undone
    assert await fire_due_steps(services, limit=200) == len(steps) - 1


async def test_record_events_continues_each_chain_like_record_event(services: Services) -> None:
    await _ladder_due(services)
    first, second = await Case.all().order_by("id").limit(2)
    await record_event(first, "criticism", public=False, clock="签收")
    seq = {c.id: await CaseEvent.filter(case_id=c.id).count() for c in (first, second)}
    entries = [
        NewEvent(second, "criticism", public=False, text_values={"clock": "答复"}),
        NewEvent(first, "province_supervise", text_values={"clock": "签收"}),
        NewEvent(first, "identity_viewed", actor="staff", public=False, data={"field": "x"}),
    ]
    written = await record_events(entries, conn=None)
    assert [(e.case_id, e.seq) for e in written] == [
        (second.id, seq[second.id] + 1),
        (first.id, seq[first.id] + 1),
        (first.id, seq[first.id] + 2),
    ]
    last = await record_event(first, "criticism", public=False, clock="答复")
    assert (last.seq, last.prev_hash) == (seq[first.id] + 3, written[-1].hash)
    assert await verify_chain() == []
    assert await record_events([], conn=None) == []
