"""Firing escalation steps that fell due: each exactly once, with its SMS in the same transaction."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from api import clock
from api.models import Case, CaseClock, EscalationStep, Unit
from api.models.case import CaseStatus
from api.models.clock import ClockStatus, StepStatus
from api.services import lifecycle
from api.services.context import Services
from api.services.outbox import enqueue_sms
from api.services.recipients import handler_phones
from api.services.routing import province_unit, supervising_unit
from api.services.timeline import record_event
from api.texts import CLOCKS

log = logging.getLogger("pingyi.escalation")

Action = Callable[[Services, Case, CaseClock, EscalationStep, BaseDBAsyncClient], Awaitable[None]]


def _sms_params(case: Case, clk: CaseClock, unit: Unit) -> dict[str, object]:
    due = clock.to_china(clk.due_at)
    return {
        "ticket": case.ticket_no,
        "clock": CLOCKS.get(clk.kind, clk.kind),
        "due": f"{due:%m月%d日%H:%M}",
        "unit": unit.name,
    }


async def _notify(
    services: Services,
    phones: list[str],
    *,
    template: str,
    case: Case,
    clk: CaseClock,
    step: EscalationStep,
    unit: Unit,
    conn: BaseDBAsyncClient,
) -> None:
    for phone in dict.fromkeys(p for p in phones if p):
        await enqueue_sms(
            services,
            phone=phone,
            template=template,
            params=_sms_params(case, clk, unit),
            purpose=f"{clk.kind}:{step.step}",
            urgent=case.urgency == "urgent",
            case_id=case.id,
            step_id=step.id,
            conn=conn,
        )


async def _warn(
    services: Services, case: Case, clk: CaseClock, step: EscalationStep, conn: BaseDBAsyncClient
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
    services: Services, case: Case, clk: CaseClock, step: EscalationStep, conn: BaseDBAsyncClient
) -> None:
    unit = await Unit.get(id=case.handling_unit_id, using_db=conn)
    above = await supervising_unit(unit)
    clk.breached_at = clock.now()
    await clk.save(using_db=conn, update_fields=["breached_at"])
    phones = [unit.leader_phone or "", above.leader_phone or ""]
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
    services: Services, case: Case, clk: CaseClock, step: EscalationStep, conn: BaseDBAsyncClient
) -> None:
    unit = await Unit.get(id=case.handling_unit_id, using_db=conn)
    province = await province_unit(unit)
    await _notify(
        services,
        [province.leader_phone or ""],
        template="province_supervise",
        case=case,
        clk=clk,
        step=step,
        unit=unit,
        conn=conn,
    )
    await record_event(case, "province_supervise", conn=conn, clock=CLOCKS.get(clk.kind, clk.kind))


async def _criticism(
    services: Services, case: Case, clk: CaseClock, step: EscalationStep, conn: BaseDBAsyncClient
) -> None:
    case.criticism_flag = True
    await case.save(using_db=conn, update_fields=["criticism_flag"])
    await record_event(
        case, "criticism", public=False, conn=conn, clock=CLOCKS.get(clk.kind, clk.kind)
    )


async def _expire(
    services: Services, case: Case, clk: CaseClock, step: EscalationStep, conn: BaseDBAsyncClient
) -> None:
    await lifecycle.close_case(case, reason="not_rated", event="closed_unrated", conn=conn)


def _action(step_name: str) -> Action:
    if step_name.startswith("warn_"):
        return _warn
    return {"due": _due, "province": _province, "criticism": _criticism, "expire": _expire}[
        step_name
    ]


async def _fire(services: Services, step: EscalationStep, conn: BaseDBAsyncClient) -> bool:
    now = clock.now()
    clk = await CaseClock.get(id=step.clock_id, using_db=conn)
    case = await Case.get(id=step.case_id, using_db=conn)
    live = clk.status == ClockStatus.RUNNING and case.status != CaseStatus.CLOSED
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
    return (
        EscalationStep.filter(status=StepStatus.PENDING, due_at__lte=clock.now())
        .order_by("due_at", "id")
        .limit(limit)
        .select_for_update(skip_locked=True)
    )


async def _fire_alone(services: Services, step: EscalationStep) -> bool:
    """One step under a savepoint: a step that cannot fire (bad data, a step name from a newer
    release) is logged and left pending, and must not hold back the steps due after it."""
    try:
        async with in_transaction() as savepoint:  # nested in the caller's: a savepoint
            return await _fire(services, step, savepoint)
    except Exception:
        log.exception("escalation step %s (%s) failed; left pending", step.id, step.step)
        return False


async def fire_due_steps(services: Services, *, limit: int = 200) -> int:
    """Fires the steps due now, oldest first; several workers may run this at once."""
    async with in_transaction() as conn:
        steps = await due_steps(limit=limit).using_db(conn)
        fired = 0
        for step in steps:
            fired += await _fire_alone(services, step)
    if fired:
        log.info("fired %d escalation steps", fired)
    return fired
