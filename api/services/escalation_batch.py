"""Firing claimed escalation steps together: the rules of the one-by-one actions in
``escalation`` (``_warn``, ``_due``, ``_province``, ``_criticism``) applied to a whole batch in
Python, between a few reads and a few writes (``escalation_store``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from tortoise.backends.base.client import BaseDBAsyncClient

from api import clock
from api.integrations.sms import clamp_params
from api.models.case import CaseStatus
from api.models.clock import ClockStatus
from api.services import escalation_store as store
from api.services.context import Services
from api.services.escalation_rows import (
    CaseRow,
    ClaimLost,
    ClockRow,
    EventRow,
    SmsRow,
    UnitRow,
    Writes,
)
from api.services.outbox import after_quiet_hours, new_out_id
from api.services.recipients import HANDLER_ROLES
from api.services.timeline import content_hash, entry_content
from api.texts import CLOCKS, EVENTS

__all__ = ["BATCHED", "ClaimLost", "batched", "fire_batch", "is_live", "plan_step", "sms_params"]

BATCHED = frozenset({"due", "province", "criticism"})  # and every warn_*; the rest go one by one


class ClaimedStep(Protocol):
    """A claimed step: an ``EscalationStep`` or an ``escalation_store.StepRow``."""

    @property
    def id(self) -> int: ...
    @property
    def case_id(self) -> int: ...
    @property
    def clock_id(self) -> int: ...
    @property
    def step(self) -> str: ...


def batched(step: ClaimedStep) -> bool:
    return step.step.startswith("warn_") or step.step in BATCHED


def is_live(*, case_status: str, clock_status: str, clock_kind: str) -> bool:
    """Whether a step of this clock still fires: the 回访 clock runs after closing, every other
    clock dies with the case."""
    return clock_status == ClockStatus.RUNNING and (
        case_status != CaseStatus.CLOSED or clock_kind == "revisit"
    )


def sms_params(
    *, ticket_no: str, clock_kind: str, due_at: datetime, unit: str
) -> dict[str, object]:
    due = clock.to_china(due_at)
    return {
        "ticket": ticket_no,
        "clock": CLOCKS.get(clock_kind, clock_kind),
        "due": f"{due:%m月%d日%H:%M}",
        "unit": unit,
    }


@dataclass(frozen=True)
class _Units:
    by_id: dict[int, UnitRow]
    by_code: dict[str, UnitRow]

    def supervising(self, unit: UnitRow) -> UnitRow:  # as routing.supervising_unit
        above = unit.supervising_unit_id or unit.parent_id
        return self.by_id[above] if above is not None else unit

    def province(self, unit: UnitRow) -> UnitRow:  # as routing.province_unit
        return self.by_code[unit.path.split("/", 1)[0]]

    def leader(self, unit: UnitRow, accused: set[str]) -> str:  # as recipients.leader_phone
        seen = {unit.id}
        while unit.leader_phone and unit.leader_phone in accused:
            unit = self.supervising(unit)
            if unit.id in seen:
                return ""
            seen.add(unit.id)
        return unit.leader_phone or ""


@dataclass
class Batch:
    """One batch: what it read, and what it will write (``writes``), gathered in claim order."""

    services: Services
    writes: Writes
    cases: dict[int, CaseRow]
    clocks: dict[int, ClockRow]
    units: _Units
    accused: dict[int, set[str]]  # officer → the phones of their staff accounts
    handlers: dict[int, list[str]]  # case → its unit's handlers (warnings only)
    _send_at: dict[str, datetime] = field(default_factory=dict)

    def send_at(self, case: CaseRow) -> datetime:
        """Now, or after quiet hours of the case's own profile (it keeps the one it was opened
        under) for routine SMS."""
        if case.urgency == "urgent":
            return self.writes.now
        if case.sla_profile not in self._send_at:
            quiet = self.services.profile(case.sla_profile).quiet_hours
            self._send_at[case.sla_profile] = after_quiet_hours(self.writes.now, quiet)
        return self._send_at[case.sla_profile]

    def sms(self, phones: list[str], *, template: str, step: ClaimedStep, unit: UnitRow) -> None:
        """The outbox rows enqueue_sms would write, one per distinct phone."""
        case, clk = self.cases[step.case_id], self.clocks[step.clock_id]
        values = sms_params(
            ticket_no=case.ticket_no, clock_kind=clk.kind, due_at=clk.due_at, unit=unit.name
        )
        params, send_at = clamp_params(values), self.send_at(case)
        purpose, urgent = f"{clk.kind}:{step.step}", case.urgency == "urgent"
        for phone in dict.fromkeys(p for p in phones if p):
            self.writes.sms.append(
                SmsRow(
                    phone,
                    template,
                    params,
                    purpose,
                    urgent,
                    case.id,
                    step.id,
                    send_at,
                    new_out_id(),
                )
            )

    def event(self, case: CaseRow, kind: str, *, public: bool = True, **values: str) -> None:
        """The entry record_event would append to the case's log, chained to its head."""
        seq, prev = self.writes.heads.get(case.id, (case.audit_seq, case.audit_hash))
        text = EVENTS[kind].format(ticket=case.ticket_no, **values)
        content = entry_content(
            case_id=case.id,
            seq=seq + 1,
            kind=kind,
            actor="system",
            staff_id=None,
            public=public,
            text=text,
            data={},
            created_at=self.writes.now,
            prev_hash=prev,
        )
        digest = content_hash(content)
        self.writes.events.append(EventRow(case.id, seq + 1, kind, public, text, prev, digest))
        self.writes.heads[case.id] = (seq + 1, digest)


def plan_step(batch: Batch, step: ClaimedStep) -> None:
    """The batch form of the one-by-one actions (escalation._warn, _due, …): the same rules."""
    case, clk = batch.cases[step.case_id], batch.clocks[step.clock_id]
    units, accused = batch.units, batch.accused[case.officer_id]
    unit = units.by_id[case.handling_unit_id]
    name = CLOCKS.get(clk.kind, clk.kind)
    if step.step.startswith("warn_"):
        if batch.writes.now >= clk.due_at:
            return  # a late warning is superseded by the deadline's own SMS
        # The accused officer is never told about a case about themself (recipients.py).
        batch.sms(batch.handlers[case.id], template="sla_warning", step=step, unit=unit)
        percent = step.step.removeprefix("warn_")
        batch.event(case, "sla_warning", public=False, clock=name, percent=percent)
    elif step.step == "due":
        batch.writes.breached_clocks.append(clk.id)
        # The leaders of the unit and of the unit above — never the accused officer.
        leaders = [units.leader(unit, accused), units.leader(units.supervising(unit), accused)]
        batch.sms(leaders, template="sla_overdue", step=step, unit=unit)
        batch.event(case, "sla_overdue", clock=name, unit=unit.name)
    elif step.step == "province":
        province = units.leader(units.province(unit), accused)
        batch.sms([province], template="province_supervise", step=step, unit=unit)
        batch.event(case, "province_supervise", clock=name)
    else:  # criticism
        batch.writes.criticised_cases.add(case.id)
        batch.event(case, "criticism", public=False, clock=name)


async def _handler_phones(
    cases: Collection[CaseRow], accused: dict[int, set[str]], conn: BaseDBAsyncClient
) -> dict[int, list[str]]:
    """recipients.handler_phones for several cases in one query: per case, the active handlers
    of its unit — never the accused officer's own staff account or phone."""
    by_unit: dict[int, list[tuple[int | None, str]]] = defaultdict(list)
    for unit_id, officer_id, phone in await store.handlers(
        {c.handling_unit_id for c in cases}, HANDLER_ROLES, conn
    ):
        by_unit[unit_id].append((officer_id, phone))
    return {
        case.id: [
            phone
            for officer_id, phone in by_unit[case.handling_unit_id]
            if officer_id != case.officer_id and phone not in accused[case.officer_id]
        ]
        for case in cases
    }


async def _read(
    services: Services,
    writes: Writes,
    live: Sequence[ClaimedStep],
    cases: dict[int, CaseRow],
    clocks: dict[int, ClockRow],
    conn: BaseDBAsyncClient,
) -> Batch:
    """What planning the live steps needs besides their cases and clocks: a query each."""
    live_cases = {s.case_id: cases[s.case_id] for s in live}.values()
    found = await store.units({c.handling_unit_id for c in live_cases}, conn)
    units = _Units({u.id: u for u in found}, {u.code: u for u in found})
    accused = await store.accused_phones({c.officer_id for c in live_cases}, conn)
    warned = {s.case_id: cases[s.case_id] for s in live if s.step.startswith("warn_")}
    handlers = await _handler_phones(warned.values(), accused, conn) if warned else {}
    return Batch(services, writes, cases, clocks, units, accused, handlers)


async def fire_batch(
    services: Services, steps: Sequence[ClaimedStep], conn: BaseDBAsyncClient
) -> int:
    """Fires claimed steps together; returns how many fired. Their cases are locked first, in id
    order, skipping those a staff action holds (escalation_store.lock_free_cases): their steps
    wait for the next pass. ``ClaimLost`` if a step was no longer pending (nothing is written)."""
    now = clock.now()
    cases = await store.lock_cases({s.case_id for s in steps}, conn)
    steps = [s for s in steps if s.case_id in cases]
    if not steps:
        return 0
    clocks = await store.clocks({s.clock_id for s in steps}, conn)
    live = [
        s
        for s in steps
        if is_live(
            case_status=cases[s.case_id].status,
            clock_status=clocks[s.clock_id].status,
            clock_kind=clocks[s.clock_id].kind,
        )
    ]
    fired = {s.id for s in live}
    writes = Writes(
        now=now,
        fired=[s.id for s in live],
        cancelled=[s.id for s in steps if s.id not in fired],
        breached_clocks=[],
        criticised_cases=set(),
        sms=[],
        events=[],
        heads={},
    )
    if live:
        batch = await _read(services, writes, live, cases, clocks, conn)
        for step in live:
            plan_step(batch, step)
    await store.write(writes, conn)
    return len(writes.fired)
