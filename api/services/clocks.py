"""SLA clocks of a case and the escalation steps derived from them (timers are rows)."""

from __future__ import annotations

from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from api.db import column
from api.models import Case, CaseClock, EscalationStep
from api.models.clock import ClockStatus, StepStatus
from api.sla.policy import Amount, SlaPolicy
from api.sla.worktime import WorkCalendar, add_working_time, working_time_between

Conn = BaseDBAsyncClient | None

_NATURAL_SECONDS = {
    "natural_seconds": 1,
    "natural_minutes": 60,
    "natural_hours": 3600,
    "natural_days": 86400,
}


def add_amount(start: datetime, amount: Amount, calendar: WorkCalendar) -> datetime:
    return add_working_time(start, amount.amount, amount.unit, calendar)


def _fraction_point(
    start: datetime, due: datetime, fraction: float, unit: str, calendar: WorkCalendar
) -> datetime:
    """The moment ``fraction`` of the time budget is used, in the clock's own kind of time."""
    if unit in _NATURAL_SECONDS:
        return start + (due - start) * fraction
    budget = working_time_between(start, due, "working_hours", calendar)
    return add_working_time(start, budget * fraction, "working_hours", calendar)


def ladder_times(
    *,
    start: datetime,
    due: datetime,
    unit: str,
    ladder_on: bool,
    policy: SlaPolicy,
    calendar: WorkCalendar,
) -> list[tuple[str, datetime]]:
    """Each step of the escalation ladder (DOMAIN.md) and when it falls due."""
    if not ladder_on:
        return [("expire", due)]
    steps = [
        (f"warn_{round(w * 100)}", _fraction_point(start, due, w, unit, calendar))
        for w in policy.ladder.warnings
    ]
    province = add_amount(due, policy.ladder.province_after, calendar)
    criticism = add_amount(province, policy.ladder.criticism_after, calendar)
    return [*steps, ("due", due), ("province", province), ("criticism", criticism)]


async def start_clock(
    case: Case,
    kind: str,
    *,
    at: datetime,
    policy: SlaPolicy,
    calendar: WorkCalendar,
    conn: Conn = None,
) -> CaseClock:
    limit = policy.clock(kind).limit
    clock = await CaseClock.create(
        case=case,
        kind=kind,
        limit_amount=limit.amount,
        limit_unit=limit.unit,
        started_at=at,
        due_at=add_amount(at, limit, calendar),
        using_db=conn,
    )
    await schedule_steps(clock, policy=policy, calendar=calendar, conn=conn, new=True)
    return clock


async def schedule_steps(
    clock: CaseClock,
    *,
    policy: SlaPolicy,
    calendar: WorkCalendar,
    conn: Conn = None,
    new: bool = False,
) -> None:
    """(Re)creates the pending steps of a clock; a step that already fired never fires again.

    ``new``: the clock was created in this transaction, so it has no steps yet."""
    fired: set[str] = set()
    if not new:
        fired = set(
            await column(
                EscalationStep.filter(clock_id=clock.id, status=StepStatus.FIRED).using_db(conn),
                "step",
            )
        )
        await (
            EscalationStep.filter(clock_id=clock.id, status=StepStatus.PENDING)
            .using_db(conn)
            .update(status=StepStatus.CANCELLED)
        )
    rule = policy.clocks.get(clock.kind)
    times = ladder_times(
        start=clock.ladder_start or clock.started_at,
        due=clock.due_at,
        unit=clock.limit_unit,
        ladder_on=rule.ladder if rule else True,
        policy=policy,
        calendar=calendar,
    )
    rows = [
        EscalationStep(
            clock_id=clock.id,
            case_id=clock.case_id,
            step=name,
            generation=clock.generation,
            due_at=at,
        )
        for name, at in times
        if name not in fired
    ]
    if rows:
        await EscalationStep.bulk_create(rows, using_db=conn)


async def stop_clocks(
    case: Case, kinds: tuple[str, ...], *, at: datetime, conn: Conn = None
) -> None:
    clocks = await CaseClock.filter(
        case_id=case.id, kind__in=kinds, status__in=(ClockStatus.RUNNING, ClockStatus.PAUSED)
    ).using_db(conn)
    for clock in clocks:
        clock.status = ClockStatus.STOPPED
        clock.stopped_at = at
        await clock.save(using_db=conn, update_fields=["status", "stopped_at"])
    if clocks:
        await (
            EscalationStep.filter(clock_id__in=[c.id for c in clocks], status=StepStatus.PENDING)
            .using_db(conn)
            .update(status=StepStatus.CANCELLED)
        )


async def stop_all_clocks(case: Case, *, at: datetime, conn: Conn = None) -> None:
    kinds = await column(CaseClock.filter(case_id=case.id).using_db(conn), "kind")
    await stop_clocks(case, tuple(kinds), at=at, conn=conn)


async def refresh_next_due(
    case: Case, *, conn: Conn = None, running: list[CaseClock] | None = None
) -> None:
    """Keeps ``case.next_due_at`` (the inbox's urgency key) equal to the nearest running deadline.

    ``running``: the case's running clocks when the caller has them all (a case just opened)."""
    if running is None:
        query = CaseClock.filter(case_id=case.id, status=ClockStatus.RUNNING).using_db(conn)
        dues = await column(query, "due_at")
    else:
        dues = [c.due_at for c in running]
    case.next_due_at = min(dues) if dues else None
    await case.save(using_db=conn, update_fields=["next_due_at"])


def shift(
    moment: datetime, *, since: datetime, until: datetime, unit: str, calendar: WorkCalendar
) -> datetime:
    """``moment`` moved later by the time that passed between ``since`` and ``until``, counted in
    the clock's own kind of time: a pause only costs the working time it really took."""
    if unit in _NATURAL_SECONDS:
        return moment + (until - since)
    hours = working_time_between(since, until, "working_hours", calendar)
    return add_working_time(moment, hours, "working_hours", calendar) if hours > 0 else moment


async def pause_clocks(
    case: Case, kinds: tuple[str, ...], *, at: datetime, conn: Conn = None
) -> None:
    clocks = await CaseClock.filter(
        case_id=case.id, kind__in=kinds, status=ClockStatus.RUNNING
    ).using_db(conn)
    for clock in clocks:
        clock.status, clock.paused_at = ClockStatus.PAUSED, at
        await clock.save(using_db=conn, update_fields=["status", "paused_at"])
    if clocks:
        await (
            EscalationStep.filter(clock_id__in=[c.id for c in clocks], status=StepStatus.PENDING)
            .using_db(conn)
            .update(status=StepStatus.CANCELLED)
        )


async def resume_clocks(
    case: Case, *, at: datetime, policy: SlaPolicy, calendar: WorkCalendar, conn: Conn = None
) -> None:
    """Paused clocks run again; their deadline and unfired steps move by the paused time."""
    for clock in await CaseClock.filter(case_id=case.id, status=ClockStatus.PAUSED).using_db(conn):
        paused_at = clock.paused_at or at

        def moved(
            moment: datetime, clock: CaseClock = clock, since: datetime = paused_at
        ) -> datetime:
            return shift(moment, since=since, until=at, unit=clock.limit_unit, calendar=calendar)

        clock.due_at = moved(clock.due_at)
        clock.ladder_start = moved(clock.ladder_start or clock.started_at)
        clock.status, clock.paused_at = ClockStatus.RUNNING, None
        clock.generation += 1
        await clock.save(using_db=conn)
        await schedule_steps(clock, policy=policy, calendar=calendar, conn=conn)


async def extend_clock(
    clock: CaseClock, *, days: int, policy: SlaPolicy, calendar: WorkCalendar, conn: Conn = None
) -> None:
    """An approved extension (延期): the deadline moves; steps not yet fired move with it."""
    clock.due_at = add_working_time(clock.due_at, days, "working_days", calendar)
    clock.generation += 1
    await clock.save(using_db=conn, update_fields=["due_at", "generation"])
    if clock.status == ClockStatus.RUNNING:
        await schedule_steps(clock, policy=policy, calendar=calendar, conn=conn)
