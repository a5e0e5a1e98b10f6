"""Firing escalation steps that fell due: each exactly once, with its SMS in the same transaction."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from api import clock
from api.db import column
from api.models import Case, CaseClock, EscalationStep, Unit
from api.models.clock import StepStatus
from api.services import escalation_store as store
from api.services import lifecycle
from api.services.context import Services
from api.services.escalation_batch import ClaimedStep, batched, fire_batch, is_live, sms_params
from api.services.outbox import enqueue_sms
from api.services.recipients import handler_phones, leader_phone, phones_of_accused
from api.services.routing import province_unit, supervising_unit
from api.services.timeline import record_event
from api.texts import CLOCKS

log = logging.getLogger("pingyi.escalation")

Action = Callable[[Services, Case, CaseClock, ClaimedStep, BaseDBAsyncClient], Awaitable[None]]


async def _notify(
    services: Services,
    phones: list[str],
    *,
    template: str,
    case: Case,
    clk: CaseClock,
    step: ClaimedStep,
    unit: Unit,
    conn: BaseDBAsyncClient,
) -> None:
    for phone in dict.fromkeys(p for p in phones if p):
        await enqueue_sms(
            services,
            phone=phone,
            template=template,
            params=sms_params(
                ticket_no=case.ticket_no, clock_kind=clk.kind, due_at=clk.due_at, unit=unit.name
            ),
            purpose=f"{clk.kind}:{step.step}",
            urgent=case.urgency == "urgent",
            policy=services.profile(case.sla_profile),
            case_id=case.id,
            step_id=step.id,
            conn=conn,
        )


async def _warn(
    services: Services, case: Case, clk: CaseClock, step: ClaimedStep, conn: BaseDBAsyncClient
) -> None:
    if clock.now() >= clk.due_at:
        return  # a late warning (worker was down) is superseded by the deadline's own SMS
    unit = await Unit.get(id=case.handling_unit_id, using_db=conn)
    # The accused officer is never told about a case about themself, even with a staff account.
    phones = await handler_phones(unit_id=unit.id, officer_id=case.officer_id, conn=conn)
    await _notify(
        services,
        phones,
        template="sla_warning",
        case=case,
        clk=clk,
        step=step,
        unit=unit,
        conn=conn,
    )  # type: ignore[arg-type]
    percent = step.step.removeprefix("warn_")
    await record_event(
        case,
        "sla_warning",
        public=False,
        conn=conn,
        clock=CLOCKS.get(clk.kind, clk.kind),
        percent=percent,
    )


async def _due(
    services: Services, case: Case, clk: CaseClock, step: ClaimedStep, conn: BaseDBAsyncClient
) -> None:
    unit = await Unit.get(id=case.handling_unit_id, using_db=conn)
    above = await supervising_unit(unit)
    clk.breached_at = clock.now()
    await clk.save(using_db=conn, update_fields=["breached_at"])
    # The leaders of the unit and of the unit above — never the accused officer (recipients.py).
    accused = await phones_of_accused(case.officer_id, conn=conn)
    phones = [
        await leader_phone(unit, accused=accused) or "",
        await leader_phone(above, accused=accused) or "",
    ]
    await _notify(
        services,
        phones,
        template="sla_overdue",
        case=case,
        clk=clk,
        step=step,
        unit=unit,
        conn=conn,
    )
    await record_event(
        case, "sla_overdue", conn=conn, clock=CLOCKS.get(clk.kind, clk.kind), unit=unit.name
    )


async def _province(
    services: Services, case: Case, clk: CaseClock, step: ClaimedStep, conn: BaseDBAsyncClient
) -> None:
    unit = await Unit.get(id=case.handling_unit_id, using_db=conn)
    province = await province_unit(unit)
    accused = await phones_of_accused(case.officer_id, conn=conn)
    await _notify(
        services,
        [await leader_phone(province, accused=accused) or ""],
        template="province_supervise",
        case=case,
        clk=clk,
        step=step,
        unit=unit,
        conn=conn,
    )
    await record_event(case, "province_supervise", conn=conn, clock=CLOCKS.get(clk.kind, clk.kind))


async def _criticism(
    services: Services, case: Case, clk: CaseClock, step: ClaimedStep, conn: BaseDBAsyncClient
) -> None:
    case.criticism_flag = True
    await case.save(using_db=conn, update_fields=["criticism_flag"])
    await record_event(
        case, "criticism", public=False, conn=conn, clock=CLOCKS.get(clk.kind, clk.kind)
    )


async def _expire(
    services: Services, case: Case, clk: CaseClock, step: ClaimedStep, conn: BaseDBAsyncClient
) -> None:
    await lifecycle.close_case(
        case, reason="not_rated", event="closed_unrated", conn=conn, services=services
    )


def _action(step_name: str) -> Action:
    if step_name.startswith("warn_"):
        return _warn
    return {"due": _due, "province": _province, "criticism": _criticism, "expire": _expire}[
        step_name
    ]


async def _fire(services: Services, step: ClaimedStep, conn: BaseDBAsyncClient) -> bool:
    now = clock.now()
    case = await store.lock_free_cases({step.case_id}, conn).first()
    if case is None:
        return False  # a staff action holds the case: the next pass
    clk = await CaseClock.get(id=step.clock_id, using_db=conn)
    live = is_live(case_status=case.status, clock_status=clk.status, clock_kind=clk.kind)
    # The conditional update is the exactly-once guarantee: a second claimant updates no row.
    claimed = (
        await EscalationStep.filter(id=step.id, status=StepStatus.PENDING)
        .using_db(conn)
        .update(
            status=StepStatus.FIRED if live else StepStatus.CANCELLED,
            fired_at=now if live else None,
        )
    )
    if not claimed or not live:
        return False
    await _action(step.step)(services, case, clk, step, conn)
    return True


def due_steps(*, limit: int) -> QuerySet[EscalationStep]:
    """Due steps, oldest first, skipping rows another worker holds (PostgreSQL row locks)."""
    return store.due_steps(now=clock.now(), limit=limit)


async def _fire_alone(services: Services, step: ClaimedStep) -> bool:
    """One step under a savepoint: a step that cannot fire (bad data, a step name from a newer
    release) is logged and left pending, and must not hold back the steps due after it."""
    try:
        async with in_transaction() as savepoint:  # nested in the caller's: a savepoint
            return await _fire(services, step, savepoint)
    except Exception:
        log.exception("escalation step %s (%s) failed; left pending", step.id, step.step)
        return False


async def _fire_together(services: Services, steps: Sequence[ClaimedStep]) -> int:
    """The batch under a savepoint; if it fails, each step alone, so one poison step cannot
    hold back the others."""
    if not steps:
        return 0
    try:
        async with in_transaction() as savepoint:  # nested in the caller's: a savepoint
            return await fire_batch(services, steps, savepoint)
    except Exception:
        log.exception("batch of %d escalation steps failed; firing them one by one", len(steps))
    fired = 0
    for step in steps:
        fired += await _fire_alone(services, step)
    return fired


@dataclass(frozen=True)
class Pass:
    claimed: int  # due steps claimed: fired, cancelled with their clock, or left for a busy case
    fired: int
    # After a pass that emptied the due list: when the next pending step falls due (the worker
    # wakes then rather than at its next poll), None if nothing is pending.
    next_due: datetime | None = None


def upcoming_steps() -> QuerySet[EscalationStep]:
    """Pending steps still to come, earliest first (the claim index serves it)."""
    after = EscalationStep.filter(status=StepStatus.PENDING, due_at__gt=clock.now())
    return after.order_by("due_at").limit(1)


async def next_due_at(conn: BaseDBAsyncClient | None = None) -> datetime | None:
    """The earliest pending step still to come: one probe of the claim index."""
    found = await column(upcoming_steps().using_db(conn), "due_at")
    return found[0] if found else None


async def fire_pass(
    services: Services, *, limit: int = 200, on_claim: Callable[[int], None] | None = None
) -> Pass:
    """Fires the steps due now, oldest first; several workers may run this at once.

    One transaction per claimed batch: the common steps (warnings, deadline, province, 通报) in
    a few set-based statements; the rare ones (expiry closes the case) and unknown ones alone.
    ``on_claim`` learns how many steps were claimed before they are fired (a full claim is a
    backlog: the worker starts more passes beside this one).
    """
    async with in_transaction() as conn:
        steps = await store.claim(now=clock.now(), limit=limit, conn=conn)
        if on_claim is not None:
            on_claim(len(steps))
        fired = await _fire_together(services, [s for s in steps if batched(s)])
        for step in steps:
            if not batched(step):
                fired += await _fire_alone(services, step)
    if fired:
        log.info("fired %d escalation steps", fired)
    upcoming = await next_due_at() if len(steps) < limit else None
    return Pass(claimed=len(steps), fired=fired, next_due=upcoming)


async def fire_due_steps(services: Services, *, limit: int = 200) -> int:
    """As ``fire_pass``; returns how many steps fired."""
    return (await fire_pass(services, limit=limit)).fired
