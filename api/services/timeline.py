"""Case events: the case's append-only, hash-chained audit log; its public entries are the timeline.

The citizen's timeline and the staff's event list are read from the same rows the audit chain
covers, so the two cannot disagree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from api import clock
from api.models import Case, CaseEvent
from api.services.clocks import Conn
from api.texts import EVENTS

GENESIS = "0" * 64  # prev_hash of a case's first entry

# Audit-only entries (never public). TODO: move into api.texts.EVENTS (not ours to edit yet).
AUDIT_TEXTS = {"identity_viewed": "查看了举报人联系方式"}


def canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )


def entry_content(
    *,
    case_id: int,
    seq: int,
    kind: str,
    actor: str,
    staff_id: int | None,
    public: bool,
    text: str,
    data: dict[str, Any],
    created_at: datetime,
    prev_hash: str,
) -> dict[str, Any]:
    """What an entry's hash covers: its content, its place in the case and the entry before it."""
    return {
        "case_id": case_id,
        "seq": seq,
        "kind": kind,
        "actor": actor,
        "staff_id": staff_id,
        "public": public,
        "text": text,
        "data": data,
        "created_at": clock.to_china(created_at).isoformat(timespec="microseconds"),
        "prev_hash": prev_hash,
    }


def canonical_entry(event: CaseEvent) -> str:
    return canonical_json(
        entry_content(
            case_id=event.case_id,
            seq=event.seq,
            kind=event.kind,
            actor=event.actor,
            staff_id=event.staff_id,
            public=event.public,
            text=event.text,
            data=event.data,
            created_at=event.created_at,
            prev_hash=event.prev_hash,
        )
    )


def entry_hash(event: CaseEvent) -> str:
    return hashlib.sha256(canonical_entry(event).encode("utf-8")).hexdigest()


def content_hash(content: dict[str, Any]) -> str:
    """The hash of an entry given as ``entry_content`` (writers that build no model instance)."""
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


def _stored_data(data: dict[str, Any] | None) -> dict[str, Any]:
    """``data`` as it will read back from the database, so the hash stays verifiable.

    PostgreSQL ``jsonb`` rewrites some floats (``1e16`` reads back as an integer): numbers with a
    fraction belong in ``data`` as text.
    """
    stored: dict[str, Any] = json.loads(canonical_json(data or {}))
    if _has_float(stored):
        raise TypeError("case event data: store fractional numbers as text")
    return stored


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def case_lock(case_id: int, conn: Conn) -> QuerySet[Case]:
    """The case row, locked until the transaction ends (a no-op on SQLite, which serialises writers).

    ``FOR NO KEY UPDATE`` (what an ``UPDATE`` of the row takes) makes the case's log writers take
    turns and waits for a ``FOR UPDATE`` holder, yet lets other transactions insert rows that merely
    reference the case (clocks, outbox): a chain writer blocks no more than it must.
    """
    return Case.filter(id=case_id).select_for_update(no_key=True).using_db(conn).only("id")


async def record_event(
    case: Case,
    kind: str,
    *,
    actor: str = "system",
    public: bool = True,
    staff_id: int | None = None,
    data: dict[str, Any] | None = None,
    conn: Conn = None,
    first: bool = False,
    **text_values: Any,
) -> CaseEvent:
    """Appends an entry to the case's audit log inside the caller's transaction.

    ``first``: the case was created in this transaction, so no other writer can see it yet and
    its log is empty (the unique (case, seq) index would refuse a second first entry)."""
    if conn is None:
        async with in_transaction() as own:
            return await record_event(
                case,
                kind,
                actor=actor,
                public=public,
                staff_id=staff_id,
                data=data,
                conn=own,
                first=first,
                **text_values,
            )
    template = EVENTS.get(kind) or AUDIT_TEXTS.get(kind, kind)
    last = None
    if not first:
        # Lock the case first, then read its last entry: two writers on one case take turns, so
        # each sees the other's entry (the unique (case, seq) index is the backstop).
        await case_lock(case.id, conn)
        last = await CaseEvent.filter(case_id=case.id).using_db(conn).order_by("-seq").first()
    event = CaseEvent(
        case_id=case.id,
        seq=last.seq + 1 if last else 1,
        kind=kind,
        actor=actor,
        public=public,
        staff_id=staff_id,
        text=template.format(ticket=case.ticket_no, **text_values),
        data=_stored_data(data),
        created_at=clock.now(),
        prev_hash=last.hash if last else GENESIS,
    )
    event.hash = entry_hash(event)
    await event.save(using_db=conn)
    await anchor_heads({case.id: (event.seq, event.hash)}, conn)
    case.audit_seq, case.audit_hash = event.seq, event.hash
    return event


async def anchor_heads(heads: dict[int, tuple[int, str]], conn: Conn) -> None:
    """Stores each case's new chain head on its row, in the entries' transaction: one statement.

    The values are integers and hex digests, so they are inlined (PostgreSQL and SQLite alike).
    """
    assert conn is not None
    if not heads:
        return
    seqs = " ".join(f"WHEN {int(i)} THEN {int(seq)}" for i, (seq, _) in heads.items())
    hashes = " ".join(f"WHEN {int(i)} THEN '{_hex(digest)}'" for i, (_, digest) in heads.items())
    ids = ",".join(str(int(i)) for i in heads)
    await conn.execute_query(
        f'UPDATE "{Case._meta.db_table}" SET audit_seq = CASE id {seqs} END, '
        f"audit_hash = CASE id {hashes} END WHERE id IN ({ids})"
    )


def _hex(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("an audit hash is 64 lowercase hex digits")
    return digest


@dataclass(frozen=True)
class NewEvent:
    """One entry for ``record_events``: the arguments ``record_event`` takes."""

    case: Case
    kind: str
    actor: str = "system"
    public: bool = True
    staff_id: int | None = None
    data: dict[str, Any] | None = None
    text_values: dict[str, Any] = field(default_factory=dict)


def _chain_heads_sql(case_ids: list[int]) -> str:
    # Integers only, so the list is inlined: one statement for PostgreSQL and SQLite alike.
    ids = ",".join(str(int(i)) for i in case_ids)
    return (
        f"SELECT e.case_id, e.seq, e.hash FROM {CaseEvent._meta.db_table} e "
        f"WHERE e.case_id IN ({ids}) AND e.seq = "
        f"(SELECT max(s.seq) FROM {CaseEvent._meta.db_table} s WHERE s.case_id = e.case_id)"
    )


async def _chain_heads(case_ids: list[int], conn: Conn) -> dict[int, tuple[int, str]]:
    """Each case's last entry (seq, hash), read once for all the cases."""
    assert conn is not None
    rows = await conn.execute_query_dict(_chain_heads_sql(case_ids))
    return {int(r["case_id"]): (int(r["seq"]), str(r["hash"])) for r in rows}


async def record_events(
    events: Sequence[NewEvent], *, conn: Conn, cases_locked: bool = False
) -> list[CaseEvent]:
    """Appends several entries, to one or several cases, in the given order, in few statements.

    The same entries ``record_event`` would write one by one: the cases are locked first, in id
    order (staff actions lock one case: no lock-order deadlock), each chain head is read once and
    the chain continued in Python with the same hash definition, then all rows go in one INSERT.
    ``cases_locked``: the caller holds those locks already (an escalation batch).
    """
    if not events:
        return []
    if conn is None:
        async with in_transaction() as own:
            return await record_events(events, conn=own)
    case_ids = sorted({e.case.id for e in events})
    if not cases_locked:  # the caller may hold the locks already (escalation batches)
        await (
            Case.filter(id__in=case_ids)
            .order_by("id")
            .select_for_update(no_key=True)
            .using_db(conn)
            .only("id")
        )
    heads = await _chain_heads(case_ids, conn)
    now = clock.now()
    rows: list[CaseEvent] = []
    for new in events:
        seq, prev = heads.get(new.case.id, (0, GENESIS))
        template = EVENTS.get(new.kind) or AUDIT_TEXTS.get(new.kind, new.kind)
        event = CaseEvent(
            case_id=new.case.id,
            seq=seq + 1,
            kind=new.kind,
            actor=new.actor,
            public=new.public,
            staff_id=new.staff_id,
            text=template.format(ticket=new.case.ticket_no, **new.text_values),
            data=_stored_data(new.data),
            created_at=now,
            prev_hash=prev,
        )
        event.hash = entry_hash(event)
        heads[new.case.id] = (event.seq, event.hash)
        rows.append(event)
    await CaseEvent.bulk_create(rows, using_db=conn)
    await anchor_heads({e.case_id: (e.seq, e.hash) for e in rows}, conn)
    for new in events:
        new.case.audit_seq, new.case.audit_hash = heads[new.case.id]
    return rows


async def events_of(case: Case, *, public_only: bool) -> list[CaseEvent]:
    query = CaseEvent.filter(case_id=case.id)
    if public_only:
        query = query.filter(public=True)
    return await query.order_by("seq")


def event_view(event: CaseEvent) -> dict[str, Any]:
    return {"kind": event.kind, "text": event.text, "at": clock.iso(event.created_at)}
