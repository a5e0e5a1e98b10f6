"""Firing escalation steps that fell due: each exactly once, with its SMS in the same transaction."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from api import clock
from api.db import column, insert_rows
from api.integrations.sms import clamp_params
from api.models import Case, CaseClock, EscalationStep, SmsOutbox, StaffUser, Unit
from api.models.case import CaseStatus
from api.models.clock import ClockStatus, StepStatus
from api.services import lifecycle
from api.services.context import Services
from api.services.outbox import after_quiet_hours, enqueue_sms, new_out_id
from api.services.recipients import (
    HANDLER_ROLES,
    accused_phones,
    handler_phones,
    leader_phone,
    phones_of_accused,
)
from api.services.routing import province_unit, supervising_unit
from api.services.timeline import NewEvent, record_event, record_events
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
            policy=services.profile(case.sla_profile),
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
    services: Services, case: Case, clk: CaseClock, step: EscalationStep, conn: BaseDBAsyncClient
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
    await lifecycle.close_case(
        case, reason="not_rated", event="closed_unrated", conn=conn, services=services
    )


def _action(step_name: str) -> Action:
    if step_name.startswith("warn_"):
        return _warn
    return {"due": _due, "province": _province, "criticism": _criticism, "expire": _expire}[
        step_name
    ]


def _lock_free_cases(case_ids: set[int], conn: BaseDBAsyncClient) -> QuerySet[Case]:
    """The cases no one else holds, locked in id order; a case a staff action holds is skipped.

    Lock order: a staff action locks its case, then changes the case's pending steps; the worker
    has claimed steps before it gets here. Waiting for the case would be the reverse order (a
    deadlock), so a busy case is skipped: its claimed steps stay pending, the claim ends with this
    transaction, and the next pass fires them against what the staff action left.
    """
    return (
        Case.filter(id__in=case_ids)
        .order_by("id")
        .select_for_update(skip_locked=True, no_key=True)
        .using_db(conn)
    )


async def _fire(services: Services, step: EscalationStep, conn: BaseDBAsyncClient) -> bool:
    now = clock.now()
    case = await _lock_free_cases({step.case_id}, conn).first()
    if case is None:
        return False  # a staff action holds the case: the next pass
    clk = await CaseClock.get(id=step.clock_id, using_db=conn)
    # The 回访 clock runs after closing: every other clock dies with the case.
    live = clk.status == ClockStatus.RUNNING and (
        case.status != CaseStatus.CLOSED or clk.kind == "revisit"
    )
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


# --- the batch path: one claimed batch in a few set-based statements ---------------------------

BATCHED = frozenset({"due", "province", "criticism"})  # and every warn_*; the rest go one by one


def _batched(step: EscalationStep) -> bool:
    return step.step.startswith("warn_") or step.step in BATCHED


@dataclass
class _Batch:
    """What one batch writes, gathered in claim order before anything is written."""

    now: datetime
    fired: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    breached_clocks: list[int] = field(default_factory=list)
    criticised_cases: list[int] = field(default_factory=list)
    sms: list[dict[str, object]] = field(default_factory=list)  # outbox rows (insert_rows)
    events: list[NewEvent] = field(default_factory=list)


@dataclass(frozen=True)
class _Units:
    by_id: dict[int, Unit]
    by_code: dict[str, Unit]

    def supervising(self, unit: Unit) -> Unit:  # as routing.supervising_unit
        above = unit.supervising_unit_id or unit.parent_id
        return self.by_id[above] if above is not None else unit

    def province(self, unit: Unit) -> Unit:  # as routing.province_unit
        return self.by_code[unit.path.split("/", 1)[0]]

    def leader(self, unit: Unit, accused: set[str]) -> str:  # as recipients.leader_phone
        seen = {unit.id}
        while unit.leader_phone and unit.leader_phone in accused:
            unit = self.supervising(unit)
            if unit.id in seen:
                return ""
            seen.add(unit.id)
        return unit.leader_phone or ""


async def _load_units(cases: Sequence[Case], conn: BaseDBAsyncClient) -> _Units:
    """The handling units of the cases, every unit above them (a leader who is the accused
    officer hands the notice up) and their provinces: a query per level."""
    units = await Unit.filter(id__in={c.handling_unit_id for c in cases}).using_db(conn)
    by_id = {u.id: u for u in units}
    roots = {u.path.split("/", 1)[0] for u in units}
    while True:
        above = {u.supervising_unit_id or u.parent_id for u in by_id.values()} - {None}
        codes = roots - {u.code for u in by_id.values()}
        missing = above - by_id.keys()
        if not missing and not codes:
            break
        found = await Unit.filter(Q(id__in=missing) | Q(code__in=codes)).using_db(conn)
        by_id |= {u.id: u for u in found}
    return _Units(by_id, {u.code: u for u in by_id.values()})


async def _handler_phones(
    cases: Sequence[Case], accused: dict[int, set[str]], conn: BaseDBAsyncClient
) -> dict[int, list[str]]:
    """recipients.handler_phones for several cases in one query: per case, the active handlers
    of its unit — never the accused officer's own staff account or phone."""
    rows = await (
        StaffUser.filter(
            unit_id__in={c.handling_unit_id for c in cases},
            role__in=HANDLER_ROLES,
            is_active=True,
            phone__isnull=False,
        )
        .using_db(conn)
        .order_by("id")
        .values("unit_id", "officer_id", "phone")
    )
    return {
        case.id: [
            r["phone"]
            for r in rows
            if r["unit_id"] == case.handling_unit_id
            and r["officer_id"] != case.officer_id
            and r["phone"] not in accused[case.officer_id]
        ]
        for case in cases
    }


def _sms_rows(
    services: Services,
    batch: _Batch,
    phones: list[str],
    *,
    template: str,
    case: Case,
    clk: CaseClock,
    step: EscalationStep,
    unit: Unit,
) -> None:
    """The outbox rows enqueue_sms would write, one per distinct phone."""
    now = batch.now
    urgent = case.urgency == "urgent"
    # Quiet hours of the case's own profile (a case keeps the profile it was opened under).
    quiet = services.profile(case.sla_profile).quiet_hours
    send_at = now if urgent else after_quiet_hours(now, quiet)
    params = clamp_params(_sms_params(case, clk, unit))
    for phone in dict.fromkeys(p for p in phones if p):
        batch.sms.append(
            {
                "phone": phone,
                "template": template,
                "params": params,
                "purpose": f"{clk.kind}:{step.step}",
                "urgent": urgent,
                "case_id": case.id,
                "step_id": step.id,
                "next_attempt_at": send_at,
                "out_id": new_out_id(),
                "created_at": now,
            }
        )


def _plan_step(
    services: Services,
    batch: _Batch,
    step: EscalationStep,
    *,
    case: Case,
    clk: CaseClock,
    units: _Units,
    handlers: dict[int, list[str]],
    accused: set[str],
) -> None:
    """The batch form of the actions above (_warn, _due, _province, _criticism): same rules."""
    unit = units.by_id[case.handling_unit_id]
    name = CLOCKS.get(clk.kind, clk.kind)
    template, phones = "", list[str]()
    if step.step.startswith("warn_"):
        if batch.now >= clk.due_at:
            return  # a late warning is superseded by the deadline's own SMS
        template, phones = "sla_warning", handlers[case.id]
        percent = step.step.removeprefix("warn_")
        values = {"clock": name, "percent": percent}
        event = NewEvent(case, "sla_warning", public=False, text_values=values)
    elif step.step == "due":
        batch.breached_clocks.append(clk.id)
        template = "sla_overdue"
        phones = [units.leader(unit, accused), units.leader(units.supervising(unit), accused)]
        event = NewEvent(case, "sla_overdue", text_values={"clock": name, "unit": unit.name})
    elif step.step == "province":
        template, phones = "province_supervise", [units.leader(units.province(unit), accused)]
        event = NewEvent(case, "province_supervise", text_values={"clock": name})
    else:  # criticism
        batch.criticised_cases.append(case.id)
        event = NewEvent(case, "criticism", public=False, text_values={"clock": name})
    if template:
        _sms_rows(
            services, batch, phones, template=template, case=case, clk=clk, step=step, unit=unit
        )
    batch.events.append(event)


class _ClaimLost(Exception):
    """A claimed step was no longer pending: the batch is undone and its steps fired one by one."""


async def _mark(ids: list[int], conn: BaseDBAsyncClient, **values: object) -> None:
    # The conditional update is the exactly-once guarantee, as in _fire: every step of the batch
    # must still be pending, else the whole batch rolls back to its savepoint.
    if ids:
        done = (
            await EscalationStep.filter(id__in=ids, status=StepStatus.PENDING)
            .using_db(conn)
            .update(**values)
        )
        if done != len(ids):
            raise _ClaimLost(f"{len(ids) - done} of {len(ids)} steps no longer pending")


async def _write(batch: _Batch, conn: BaseDBAsyncClient) -> None:
    await _mark(batch.fired, conn, status=StepStatus.FIRED, fired_at=batch.now)
    await _mark(batch.cancelled, conn, status=StepStatus.CANCELLED, fired_at=None)
    if batch.breached_clocks:
        clocks = CaseClock.filter(id__in=batch.breached_clocks).using_db(conn)
        await clocks.update(breached_at=batch.now)
    if batch.criticised_cases:
        await Case.filter(id__in=batch.criticised_cases).using_db(conn).update(criticism_flag=True)
    await insert_rows(SmsOutbox, batch.sms, conn)
    await record_events(batch.events, conn=conn, cases_locked=True)  # by _fire_batch


# What firing reads of a case: not its texts (description, replies), which a burst would drag in.
_CASE_FIELDS = (
    "id",
    "ticket_no",
    "status",
    "urgency",
    "sla_profile",
    "handling_unit_id",
    "officer_id",
)


async def _fire_batch(
    services: Services, steps: Sequence[EscalationStep], conn: BaseDBAsyncClient
) -> int:
    """Fires claimed steps together. Their cases are locked first, in id order, skipping those a
    staff action holds (see _lock_free_cases): their steps wait for the next pass."""
    batch = _Batch(now=clock.now())
    locked = _lock_free_cases({s.case_id for s in steps}, conn).only(*_CASE_FIELDS)
    cases = {c.id: c for c in await locked}
    steps = [s for s in steps if s.case_id in cases]
    if not steps:
        return 0
    clock_rows = await CaseClock.filter(id__in={s.clock_id for s in steps}).using_db(conn)
    clocks = {k.id: k for k in clock_rows}
    live = [
        s
        for s in steps
        if clocks[s.clock_id].status == ClockStatus.RUNNING
        and (cases[s.case_id].status != CaseStatus.CLOSED or clocks[s.clock_id].kind == "revisit")
    ]
    batch.fired = [s.id for s in live]
    fired = set(batch.fired)
    batch.cancelled = [s.id for s in steps if s.id not in fired]
    live_cases = [cases[i] for i in dict.fromkeys(s.case_id for s in live)]
    if live_cases:
        units = await _load_units(live_cases, conn)
        accused = await accused_phones({c.officer_id for c in live_cases}, conn=conn)
        warned = [cases[i] for i in dict.fromkeys(s.case_id for s in live if s.step[:5] == "warn_")]
        handlers = await _handler_phones(warned, accused, conn) if warned else {}
        for step in live:
            case, clk = cases[step.case_id], clocks[step.clock_id]
            _plan_step(
                services,
                batch,
                step,
                case=case,
                clk=clk,
                units=units,
                handlers=handlers,
                accused=accused[case.officer_id],
            )
    await _write(batch, conn)
    return len(batch.fired)


async def _fire_together(services: Services, steps: list[EscalationStep]) -> int:
    """The batch under a savepoint; if it fails, each step alone, so one poison step cannot
    hold back the others."""
    if not steps:
        return 0
    try:
        async with in_transaction() as savepoint:  # nested in the caller's: a savepoint
            return await _fire_batch(services, steps, savepoint)
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


async def fire_pass(services: Services, *, limit: int = 200) -> Pass:
    """Fires the steps due now, oldest first; several workers may run this at once.

    One transaction per claimed batch: the common steps (warnings, deadline, province, 通报) in
    a few set-based statements; the rare ones (expiry closes the case) and unknown ones alone.
    """
    async with in_transaction() as conn:
        steps = await due_steps(limit=limit).using_db(conn)
        fired = await _fire_together(services, [s for s in steps if _batched(s)])
        for step in steps:
            if not _batched(step):
                fired += await _fire_alone(services, step)
    if fired:
        log.info("fired %d escalation steps", fired)
    upcoming = await next_due_at() if len(steps) < limit else None
    return Pass(claimed=len(steps), fired=fired, next_due=upcoming)


async def fire_due_steps(services: Services, *, limit: int = 200) -> int:
    """As ``fire_pass``; returns how many steps fired."""
    return (await fire_pass(services, limit=limit)).fired
