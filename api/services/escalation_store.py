"""What firing a batch of escalation steps reads and writes: a handful of statements on PostgreSQL.

A burst (10,000 steps due at 17:30) is fired in batches; on PostgreSQL each batch is a claim,
the locks on its cases, three small reads (clocks, units, phones) and three writes, in plain SQL
with array parameters and plain rows — no model instances (scripts/bench-sla). The embedded
SQLite default has no row locks (one writer at a time) and goes through the ORM, with the same
rows in and out (as ``rating_store`` does).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import fields
from datetime import datetime
from operator import attrgetter
from typing import Any, cast

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from api import db
from api.models import Case, CaseClock, CaseEvent, EscalationStep, SmsOutbox, StaffUser, Unit
from api.models.clock import StepStatus
from api.models.outbox import OutboxStatus
from api.services.escalation_rows import (
    CaseRow,
    ClaimLost,
    ClockRow,
    EventRow,
    SmsRow,
    StepRow,
    UnitRow,
    Writes,
)
from api.services.timeline import anchor_heads

_CASE_FIELDS = tuple(f.name for f in fields(CaseRow))
_UNIT_FIELDS = tuple(f.name for f in fields(UnitRow))
_UNIT_COLUMNS = ", ".join(_UNIT_FIELDS)

# The claim: due steps, oldest first, skipping rows another worker holds. Its plan is an index
# scan of (status, due_at, id) whatever the burst (scripts/bench-sla shows it).
CLAIM_SQL = """
SELECT id, case_id, clock_id, step FROM escalation_step
WHERE status = $1 AND due_at <= $2 ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED
"""
LOCK_CASES_SQL = f"""
SELECT {", ".join(_CASE_FIELDS)} FROM "case" WHERE id = ANY($1::int[])
ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
"""
_CLOCKS = "SELECT id, kind, status, due_at FROM case_clock WHERE id = ANY($1::int[])"
# The handling units, every unit above them (a leader who is the accused officer hands the notice
# up) and their provinces — the root of each path — and above those, in one walk.
_UNITS = f"""
WITH RECURSIVE needed AS (
    SELECT {_UNIT_COLUMNS} FROM unit WHERE id = ANY($1::int[])
    UNION
    SELECT {", ".join(f"u.{c}" for c in _UNIT_FIELDS)} FROM needed n JOIN unit u
        ON u.id = coalesce(n.supervising_unit_id, n.parent_id)
        OR u.code = split_part(n.path, '/', 1)
)
SELECT {_UNIT_COLUMNS} FROM needed
"""
_ACCUSED = """
SELECT officer_id, phone FROM staff_user WHERE officer_id = ANY($1::int[]) AND phone IS NOT NULL
"""
_HANDLERS = """
SELECT unit_id, officer_id, phone FROM staff_user
WHERE unit_id = ANY($1::int[]) AND role = ANY($2::varchar[]) AND is_active AND phone IS NOT NULL
ORDER BY id
"""
# The conditional update is the exactly-once guarantee, as in escalation._fire: every step of the
# batch must still be pending (the count says), else the whole batch rolls back to its savepoint.
# The case rows take their new chain heads and 通报 flags in the same statement.
_MARK = f"""
WITH marked AS (
    UPDATE escalation_step s
    SET status = v.status,
        fired_at = CASE WHEN v.status = '{StepStatus.FIRED}' THEN $3::timestamptz END
    FROM unnest($1::int[], $2::varchar[]) AS v(id, status)
    WHERE s.id = v.id AND s.status = '{StepStatus.PENDING}'
    RETURNING s.id
), breached AS (
    UPDATE case_clock SET breached_at = $3 WHERE id = ANY($4::int[])
), heads AS (
    UPDATE "case" c
    SET audit_seq = v.seq, audit_hash = v.hash, criticism_flag = c.criticism_flag OR v.criticised
    FROM unnest($5::int[], $6::int[], $7::varchar[], $8::bool[]) AS v(id, seq, hash, criticised)
    WHERE c.id = v.id
)
SELECT count(*) FROM marked
"""
_INSERT_SMS = f"""
INSERT INTO sms_outbox (phone, template, params, purpose, urgent, case_id, step_id,
                        next_attempt_at, out_id, status, attempts, uncertain_attempts, created_at)
SELECT v.phone, v.template, v.params::jsonb, v.purpose, v.urgent, v.case_id, v.step_id,
       v.next_attempt_at, v.out_id, '{OutboxStatus.PENDING}', 0, 0, $10
FROM unnest($1::varchar[], $2::varchar[], $3::text[], $4::varchar[], $5::bool[], $6::int[],
            $7::int[], $8::timestamptz[], $9::varchar[])
     AS v(phone, template, params, purpose, urgent, case_id, step_id, next_attempt_at, out_id)
"""
_INSERT_EVENTS = """
INSERT INTO case_event (case_id, seq, kind, actor, staff_id, public, text, data, created_at,
                        prev_hash, hash)
SELECT v.case_id, v.seq, v.kind, 'system', NULL, v.public, v.text, '{}', $8, v.prev_hash, v.hash
FROM unnest($1::int[], $2::int[], $3::varchar[], $4::bool[], $5::text[], $6::varchar[],
            $7::varchar[]) AS v(case_id, seq, kind, public, text, prev_hash, hash)
"""


def due_steps(*, now: datetime, limit: int) -> QuerySet[EscalationStep]:
    """Due steps, oldest first, skipping rows another worker holds (PostgreSQL row locks)."""
    return (
        EscalationStep.filter(status=StepStatus.PENDING, due_at__lte=now)
        .order_by("due_at", "id")
        .limit(limit)
        .select_for_update(skip_locked=True)
    )


def lock_free_cases(case_ids: Collection[int], conn: BaseDBAsyncClient) -> QuerySet[Case]:
    """The cases no one else holds, locked in id order; a case a staff action holds is skipped.

    Lock order: a staff action locks its case, then changes the case's clocks and pending steps;
    the worker has claimed steps before it gets here. Waiting for the case would be the reverse
    order (a deadlock), so a busy case is skipped: its claimed steps stay pending, the claim ends
    with this transaction, and the next pass fires them against what the staff action left. The
    worker touches a clock only after its case is locked (``LOCK_CASES_SQL`` is the same on
    PostgreSQL).
    """
    return (
        Case.filter(id__in=case_ids)
        .order_by("id")
        .select_for_update(skip_locked=True, no_key=True)
        .using_db(conn)
    )


async def _fetch(conn: BaseDBAsyncClient, sql: str, values: list[Any]) -> Sequence[Sequence[Any]]:
    """Rows as asyncpg gives them (records, read by position)."""
    _, rows = await conn.execute_query(sql, values)
    return cast(Sequence[Sequence[Any]], rows)


async def claim(*, now: datetime, limit: int, conn: BaseDBAsyncClient) -> list[StepRow]:
    if not db.is_postgres(conn):
        steps = await due_steps(now=now, limit=limit).using_db(conn)
        return [StepRow(s.id, s.case_id, s.clock_id, s.step) for s in steps]
    rows = await _fetch(conn, CLAIM_SQL, [StepStatus.PENDING, now, limit])
    return [StepRow(*r) for r in rows]


async def lock_cases(case_ids: Collection[int], conn: BaseDBAsyncClient) -> dict[int, CaseRow]:
    rows: Sequence[Sequence[Any]]
    if not db.is_postgres(conn):
        rows = await lock_free_cases(case_ids, conn).values_list(*_CASE_FIELDS)
    else:
        rows = await _fetch(conn, LOCK_CASES_SQL, [list(case_ids)])
    return {r[0]: CaseRow(*r) for r in rows}


async def clocks(clock_ids: Collection[int], conn: BaseDBAsyncClient) -> dict[int, ClockRow]:
    """Read after the cases are locked: a staff action that changed a clock has committed."""
    rows: Sequence[Sequence[Any]]
    if not db.is_postgres(conn):
        query = CaseClock.filter(id__in=clock_ids).using_db(conn)
        rows = await query.values_list("id", "kind", "status", "due_at")
    else:
        rows = await _fetch(conn, _CLOCKS, [list(clock_ids)])
    return {r[0]: ClockRow(*r) for r in rows}


async def units(unit_ids: Collection[int], conn: BaseDBAsyncClient) -> list[UnitRow]:
    """The units a notice about cases of these handling units may go to (see ``_UNITS``)."""
    if db.is_postgres(conn):
        rows = await _fetch(conn, _UNITS, [list(unit_ids)])
        return [UnitRow(*r) for r in rows]
    found = {
        u.id: u for u in await _unit_rows(Unit.filter(id__in=unit_ids).using_db(conn))
    }  # then a query per level
    while True:
        above = {u.supervising_unit_id or u.parent_id for u in found.values()} - {None}
        codes = {u.path.split("/", 1)[0] for u in found.values()} - {u.code for u in found.values()}
        missing = above - found.keys()
        if not missing and not codes:
            return list(found.values())
        more = Unit.filter(Q(id__in=missing) | Q(code__in=codes)).using_db(conn)
        found |= {u.id: u for u in await _unit_rows(more)}


async def _unit_rows(query: QuerySet[Unit]) -> list[UnitRow]:
    return [UnitRow(*r) for r in await query.values_list(*_UNIT_FIELDS)]


async def accused_phones(
    officer_ids: Collection[int], conn: BaseDBAsyncClient
) -> dict[int, set[str]]:
    """Per officer, the phones of the staff accounts linked to them (recipients.accused_phones)."""
    rows: Sequence[Sequence[Any]]
    if not db.is_postgres(conn):
        query = StaffUser.filter(officer_id__in=officer_ids, phone__isnull=False).using_db(conn)
        rows = await query.values_list("officer_id", "phone")
    else:
        rows = await _fetch(conn, _ACCUSED, [list(officer_ids)])
    found: dict[int, set[str]] = {i: set() for i in officer_ids}
    for officer_id, phone in rows:
        found[officer_id].add(phone)
    return found


async def handlers(
    unit_ids: Collection[int], roles: Sequence[str], conn: BaseDBAsyncClient
) -> list[tuple[int, int | None, str]]:
    """(unit, officer, phone) of the active staff of these roles in these units, by account."""
    if db.is_postgres(conn):
        rows = await _fetch(conn, _HANDLERS, [list(unit_ids), list(roles)])
        return [(r[0], r[1], r[2]) for r in rows]
    query = StaffUser.filter(
        unit_id__in=unit_ids, role__in=roles, is_active=True, phone__isnull=False
    ).using_db(conn)
    return list(await query.order_by("id").values_list("unit_id", "officer_id", "phone"))


async def write(writes: Writes, conn: BaseDBAsyncClient) -> None:
    """Marks the steps and writes what they caused; ``ClaimLost`` if a step was not pending."""
    if db.is_postgres(conn):
        await _write_sql(writes, conn)
    else:
        await _write_orm(writes, conn)


async def _write_sql(w: Writes, conn: BaseDBAsyncClient) -> None:
    steps = w.fired + w.cancelled
    statuses = [StepStatus.FIRED] * len(w.fired) + [StepStatus.CANCELLED] * len(w.cancelled)
    heads = list(w.heads.items())
    rows = await _fetch(
        conn,
        _MARK,
        [
            steps,
            statuses,
            w.now,
            w.breached_clocks,
            [case_id for case_id, _ in heads],
            [seq for _, (seq, _) in heads],
            [digest for _, (_, digest) in heads],
            [case_id in w.criticised_cases for case_id, _ in heads],
        ],
    )
    if rows[0][0] != len(steps):
        raise ClaimLost(f"{len(steps) - rows[0][0]} of {len(steps)} steps no longer pending")
    if w.sms:
        await conn.execute_query(_INSERT_SMS, [*_sms_columns(w.sms), w.now])
    if w.events:
        await conn.execute_query(_INSERT_EVENTS, [*_columns(w.events, _EVENT_COLUMNS), w.now])


# In the order of _INSERT_SMS and _INSERT_EVENTS.
_SMS_COLUMNS = "phone template params purpose urgent case_id step_id next_attempt_at out_id"
_EVENT_COLUMNS = "case_id seq kind public text prev_hash hash"


def _columns(rows: Sequence[SmsRow | EventRow], names: str) -> list[list[Any]]:
    """The rows as one array per column, the parameters ``unnest`` takes."""
    get = attrgetter(*names.split())
    return [list(column) for column in zip(*map(get, rows), strict=True)]


def _sms_columns(rows: list[SmsRow]) -> list[list[Any]]:
    columns = _columns(rows, _SMS_COLUMNS)
    dumped: dict[int, str] = {}  # a step's rows share one dict of values: dumped once
    for values in columns[2]:
        if id(values) not in dumped:
            dumped[id(values)] = json.dumps(values, ensure_ascii=False)
    columns[2] = [dumped[id(values)] for values in columns[2]]
    return columns


async def _mark(ids: list[int], conn: BaseDBAsyncClient, **values: object) -> None:
    if ids:
        pending = EscalationStep.filter(id__in=ids, status=StepStatus.PENDING).using_db(conn)
        done = await pending.update(**values)
        if done != len(ids):
            raise ClaimLost(f"{len(ids) - done} of {len(ids)} steps no longer pending")


async def _write_orm(w: Writes, conn: BaseDBAsyncClient) -> None:
    await _mark(w.fired, conn, status=StepStatus.FIRED, fired_at=w.now)
    await _mark(w.cancelled, conn, status=StepStatus.CANCELLED, fired_at=None)
    if w.breached_clocks:
        await CaseClock.filter(id__in=w.breached_clocks).using_db(conn).update(breached_at=w.now)
    if w.criticised_cases:
        await Case.filter(id__in=w.criticised_cases).using_db(conn).update(criticism_flag=True)
    sms = [{**_fields(r), "created_at": w.now} for r in w.sms]
    await db.insert_rows(SmsOutbox, sms, conn)
    events = [{**_fields(e), "actor": "system", "created_at": w.now} for e in w.events]
    await db.insert_rows(CaseEvent, events, conn)
    await anchor_heads(w.heads, conn)


def _fields(row: SmsRow | EventRow) -> dict[str, object]:
    return {f.name: getattr(row, f.name) for f in fields(row)}
