"""Accountability: audit entries beyond the case lifecycle, and verifying every case's hash chain.

The log is ``CaseEvent`` (written only by ``api.services.timeline.record_event``). Each entry
carries its ``seq`` in the case, the previous entry's hash and its own hash, so an entry edited,
deleted or reordered directly in the database breaks the chain at that entry. The case row keeps
the chain's head (``audit_seq``, ``audit_hash``), written in the transaction of every entry: a
chain cut short at its end, or whose tail was rewritten with recomputed hashes, no longer ends
where its case says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tortoise.expressions import Q, Subquery

from api.models import Case, CaseEvent
from api.services.clocks import Conn
from api.services.timeline import GENESIS, entry_hash, record_event

CHUNK = 1000

# What a broken entry says, in Chinese and English (kind → texts).
PROBLEMS = {
    "hash_mismatch": ("哈希不符：条目内容被修改", "hash mismatch: entry edited"),
    "seq_gap": ("序号不连续：条目被删除", "seq gap: entries deleted"),
    "duplicate_seq": ("序号重复：条目被复制或插入", "duplicate seq: entry copied or inserted"),
    "prev_hash_mismatch": (
        "前序哈希不符：条目被删除、改写或调换顺序",
        "prev_hash mismatch: entries deleted, rewritten or reordered",
    ),
    "no_entries": ("案件没有任何审计条目：日志被删除", "no entries: the case's log was deleted"),
    "tail_missing": (
        "链尾条目缺失：案件记录的最后条目已被删除",
        "tail missing: the last entries the case records were deleted",
    ),
    "anchor_mismatch": (
        "链尾与案件记录的锚点不符：末尾条目被改写或另行写入",
        "anchor mismatch: the last entry was rewritten or written outside the log",
    ),
}


@dataclass(frozen=True)
class Problem:
    """The first broken entry of one case."""

    case_id: int
    ticket_no: str
    event_id: int | None
    seq: int | None
    kind: str  # a key of PROBLEMS
    detail: str = ""

    def describe(self) -> str:
        zh, en = PROBLEMS[self.kind]
        where = "" if self.event_id is None else f" 条目/entry #{self.event_id} (seq {self.seq})"
        if self.event_id is None and self.seq is not None:
            where = f" 条目/entry seq {self.seq}"
        extra = f" [{self.detail}]" if self.detail else ""
        return f"{self.ticket_no}{where}: {zh} / {en}{extra}"


@dataclass
class ChainReport:
    entries: int = 0
    cases: int = 0
    problems: list[Problem] = field(default_factory=list)


async def audit_identity_view(
    case: Case, *, staff_id: int, conn: Conn = None, field_name: str = "contact_phone"
) -> CaseEvent:
    """Records that a staff member saw a named reporter's identity (never shown to the citizen)."""
    return await record_event(
        case,
        "identity_viewed",
        actor="staff",
        public=False,
        staff_id=staff_id,
        data={"field": field_name},
        conn=conn,
    )


async def verify_chain(case_id: int | None = None, *, chunk_size: int = CHUNK) -> list[Problem]:
    """The first broken entry of each case whose chain is broken (all cases, or one)."""
    return (await check_chain(case_id, chunk_size=chunk_size)).problems


async def check_chain(case_id: int | None = None, *, chunk_size: int = CHUNK) -> ChainReport:
    report = ChainReport()
    walk = _Walk()
    broken: dict[int, tuple[int | None, int | None, str, str]] = {}
    ends: dict[int, _Walk] = {}  # intact chains waiting for their case row's anchor
    async for event in _entries(case_id, chunk_size):
        report.entries += 1
        if event.case_id != walk.case_id:
            report.cases += 1
            _finish(walk, ends)
            if len(ends) >= chunk_size:
                broken |= await _against_anchors(ends)
            walk = _Walk(event.case_id)
        if walk.broken:
            continue  # only the first broken entry of a case is named
        found = walk.check(event)
        if found:
            walk.broken = True
            broken[event.case_id] = (event.id, event.seq, *found)
    _finish(walk, ends)
    broken |= await _against_anchors(ends)
    for missing in await _cases_without_entries(case_id):
        broken[missing] = (None, None, "no_entries", "")
    report.problems = await _named(broken)
    return report


@dataclass
class _Walk:
    case_id: int | None = None
    expected_seq: int = 1
    prev_hash: str = GENESIS
    broken: bool = False
    last_id: int | None = None  # the chain's last entry so far

    def check(self, event: CaseEvent) -> tuple[str, str] | None:
        if event.seq == self.expected_seq - 1 and event.seq > 0:
            return "duplicate_seq", f"seq {event.seq} appears twice"
        if event.seq != self.expected_seq:
            return "seq_gap", f"expected seq {self.expected_seq}, found {event.seq}"
        if event.prev_hash != self.prev_hash:
            return "prev_hash_mismatch", f"expected {self.prev_hash[:12]}…"
        if entry_hash(event) != event.hash:
            return "hash_mismatch", ""
        self.expected_seq, self.prev_hash, self.last_id = event.seq + 1, event.hash, event.id
        return None


def _finish(walk: _Walk, ends: dict[int, _Walk]) -> None:
    if walk.case_id is not None and not walk.broken:
        ends[walk.case_id] = walk


async def _against_anchors(
    ends: dict[int, _Walk],
) -> dict[int, tuple[int | None, int | None, str, str]]:
    """Intact chains checked against the head their case row records (then forgotten).

    A chain is internally consistent after its last entries are deleted, or after its tail is
    rewritten with recomputed hashes; the anchor, written with every entry, is not.
    """
    if not ends:
        return {}
    rows = await Case.filter(id__in=list(ends)).values_list("id", "audit_seq", "audit_hash")
    found: dict[int, tuple[int | None, int | None, str, str]] = {}
    for case_id, seq, digest in rows:
        walk = ends[case_id]
        last_seq = walk.expected_seq - 1
        if last_seq < seq:
            detail = f"the case records seq {seq}, the log ends at seq {last_seq}"
            found[case_id] = (None, last_seq + 1, "tail_missing", detail)
        elif (last_seq, walk.prev_hash) != (seq, digest):
            detail = f"the case records seq {seq} ({digest[:12]}…)"
            found[case_id] = (walk.last_id, last_seq, "anchor_mismatch", detail)
    ends.clear()
    return found


async def _entries(case_id: int | None, chunk_size: int) -> AsyncIterator[CaseEvent]:
    """Every entry in (case, seq) order, read in chunks (keyset pagination, never all at once)."""
    after: CaseEvent | None = None
    while True:
        query = CaseEvent.all()
        if case_id is not None:
            query = query.filter(case_id=case_id)
        if after is not None:
            query = query.filter(
                Q(case_id__gt=after.case_id)
                | Q(case_id=after.case_id, seq__gt=after.seq)
                | Q(case_id=after.case_id, seq=after.seq, id__gt=after.id),
                case_id__gte=after.case_id,
            )
        chunk = await query.order_by("case_id", "seq", "id").limit(chunk_size)
        for event in chunk:
            yield event
        if len(chunk) < chunk_size:
            return
        after = chunk[-1]


async def _cases_without_entries(case_id: int | None) -> list[int]:
    # Every case gets its first entry in the transaction that opens it: none left means deleted.
    query = Case.exclude(id__in=Subquery(CaseEvent.all().values("case_id")))
    if case_id is not None:
        query = query.filter(id=case_id)
    return [c.id for c in await query.only("id")]


async def _named(broken: dict[int, tuple[int | None, int | None, str, str]]) -> list[Problem]:
    if not broken:
        return []
    tickets = dict(await Case.filter(id__in=list(broken)).values_list("id", "ticket_no"))
    return [
        Problem(
            case_id=case_id,
            ticket_no=str(tickets.get(case_id, f"case {case_id}")),
            event_id=event_id,
            seq=seq,
            kind=kind,
            detail=detail,
        )
        for case_id, (event_id, seq, kind, detail) in sorted(broken.items())
    ]
