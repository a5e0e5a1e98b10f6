"""Staff actions and the worker on the same case at the same moment (issue 3, "Firing").

A staff action locks its case, then changes the case's pending steps; the worker claims steps,
then needs their cases. The worker skips a case a staff action holds (its steps wait for the next
pass), so the two never wait for each other in opposite orders: no deadlock, no 500, and every
step still fires at most once — or is cancelled by the action.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from tortoise.transactions import in_transaction

from api import clock
from api.models import Case, CaseEvent, EscalationStep, SmsOutbox
from api.models.clock import StepStatus
from api.services import escalation
from api.services.context import Services
from api.services.escalation import due_steps, fire_pass
from tests.support import at, file_cases, make_world, staff_token

STAFF = "/api/v1/staff/complaints"


@pytest.fixture(autouse=True)
def _no_new_case_notices(services: Services) -> Iterator[None]:
    services.settings.notify_new_cases = False
    yield
    services.settings.notify_new_cases = True


async def _cases_with_warnings_due(services: Services, count: int) -> list[str]:
    """Cases filed at 10:00; at 11:50 the warnings (50 %, 80 %) of their 签收 clocks are due."""
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    tickets = await file_cases(services, world, count)
    clock.freeze(at("2025-03-03 11:50"))
    return tickets


async def _step_counts(ticket: str) -> Counter[str]:
    case = await Case.get(ticket_no=ticket)
    rows = await EscalationStep.filter(case_id=case.id, clock__kind="acknowledge")
    return Counter(r.status for r in rows if r.step.startswith("warn_"))


async def _assert_exactly_once() -> None:
    fired = await EscalationStep.filter(status=StepStatus.FIRED, step__startswith="warn_")
    warnings = await CaseEvent.filter(kind="sla_warning").count()
    assert warnings == len(fired)  # one event per fired warning, none twice
    rows = await SmsOutbox.filter(step_id__isnull=False).values_list("step_id", "phone")
    assert len(rows) == len(set(rows))
    assert {s for s, _ in rows} <= {f.id for f in fired}


async def test_a_staff_action_on_a_claimed_case_neither_deadlocks_nor_double_fires(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The exact interleaving that deadlocked: the worker holds the claimed steps, the handler's
    acknowledge holds the case and waits for those steps, then the worker reaches the case."""
    (ticket,) = await _cases_with_warnings_due(services, 1)
    handler = await staff_token(client, "county-430102")
    async with in_transaction() as conn:
        claimed = await due_steps(limit=50).using_db(conn)
        assert len(claimed) == 2
        ack = asyncio.create_task(client.post(f"{STAFF}/{ticket}/acknowledge", headers=handler))
        await asyncio.sleep(0.5)  # the acknowledge now holds the case and waits for the steps
        assert not ack.done()
        fired = await escalation._fire_together(services, list(claimed))
        assert fired == 0  # the case was busy: nothing fired, the steps stay pending
    res = await asyncio.wait_for(ack, timeout=10)
    assert res.status_code == 200, res.text
    assert await _step_counts(ticket) == Counter({StepStatus.CANCELLED: 2})
    assert (await fire_pass(services)).fired == 0
    assert not await SmsOutbox.filter(step_id__isnull=False).exists()


async def test_a_busy_case_fires_on_the_next_pass(services: Services) -> None:
    (ticket,) = await _cases_with_warnings_due(services, 1)
    case = await Case.get(ticket_no=ticket)
    async with in_transaction() as staff:
        await Case.filter(id=case.id).select_for_update().using_db(staff).get()
        # The worker in a context of its own, so on a connection of its own.
        worker = asyncio.create_task(fire_pass(services), context=contextvars.Context())
        assert (await asyncio.wait_for(worker, timeout=5)).fired == 0  # skipped, not waited for
    assert (await fire_pass(services)).fired == 2
    assert await _step_counts(ticket) == Counter({StepStatus.FIRED: 2})
    await _assert_exactly_once()


ROUNDS, PER_ROUND = 8, 6


async def test_acknowledge_and_reply_while_workers_fire_many_rounds(
    client: httpx.AsyncClient, services: Services
) -> None:
    tickets = await _cases_with_warnings_due(services, ROUNDS * PER_ROUND)
    handler = await staff_token(client, "county-430102")

    async def act(ticket: str, n: int) -> list[int]:
        await asyncio.sleep(0.002 * (n % 5))  # spread over the firing passes
        codes = [(await client.post(f"{STAFF}/{ticket}/acknowledge", headers=handler)).status_code]
        if n % 2:
            res = await client.post(
                f"{STAFF}/{ticket}/reply", json={"message": "经核查，已批评教育。"}, headers=handler
            )
            codes.append(res.status_code)
        return codes

    async def worker() -> int:
        fired = 0
        for _ in range(4):
            fired += (await fire_pass(services, limit=3)).fired
        return fired

    for r in range(ROUNDS):
        batch = tickets[r * PER_ROUND : (r + 1) * PER_ROUND]
        results = await asyncio.gather(
            worker(), worker(), *(act(t, n) for n, t in enumerate(batch))
        )
        codes = [c for cs in results[2:] for c in cs]  # type: ignore[union-attr]
        assert codes and set(codes) == {200}, codes
        while (await fire_pass(services)).claimed:
            pass
        for ticket in batch:
            counts = await _step_counts(ticket)
            assert sum(counts.values()) == 2 and not counts[StepStatus.PENDING], counts
    await _assert_exactly_once()
    assert await EscalationStep.filter(status=StepStatus.FIRED).exists()  # the race really ran
