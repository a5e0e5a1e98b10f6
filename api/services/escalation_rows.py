"""The plain rows an escalation batch reads and writes (``escalation_store``): no model instances,
which cost more to build than the statements cost to run in a burst (scripts/bench-sla)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class StepRow:
    """A claimed step: what firing needs of it (an ``EscalationStep`` has the same attributes)."""

    id: int
    case_id: int
    clock_id: int
    step: str


@dataclass(frozen=True, slots=True)
class CaseRow:
    """What firing reads of a case: not its texts, which a burst would drag in; with its chain
    head (``audit_seq``, ``audit_hash``), read under the case's lock, so it is current."""

    id: int
    ticket_no: str
    status: str
    urgency: str
    sla_profile: str
    handling_unit_id: int
    officer_id: int
    audit_seq: int
    audit_hash: str


@dataclass(frozen=True, slots=True)
class ClockRow:
    id: int
    kind: str
    status: str
    due_at: datetime


@dataclass(frozen=True, slots=True)
class UnitRow:
    id: int
    code: str
    name: str
    path: str
    parent_id: int | None
    supervising_unit_id: int | None
    leader_phone: str | None


@dataclass(frozen=True, slots=True)
class SmsRow:
    """An outbox row as ``enqueue_sms`` writes it (status pending, no attempts yet)."""

    phone: str
    template: str
    params: dict[str, str]
    purpose: str
    urgent: bool
    case_id: int
    step_id: int
    next_attempt_at: datetime
    out_id: str


@dataclass(frozen=True, slots=True)
class EventRow:
    """A case event as ``record_event`` writes it for the system (no staff, no data)."""

    case_id: int
    seq: int
    kind: str
    public: bool
    text: str
    prev_hash: str
    hash: str


@dataclass
class Writes:
    """Everything one batch writes, gathered before anything is written."""

    now: datetime
    fired: list[int]
    cancelled: list[int]
    breached_clocks: list[int]
    criticised_cases: set[int]
    sms: list[SmsRow]
    events: list[EventRow]
    heads: dict[int, tuple[int, str]]  # case id → its chain's new head (seq, hash)


class ClaimLost(Exception):
    """A claimed step was no longer pending: the batch is undone and its steps fired one by one."""
