"""The audit log: a hash chain per case that catches entries edited, deleted or reordered in the DB."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys

import httpx
from tortoise import connections
from tortoise.transactions import in_transaction

from api import clock
from api.models import Card, Case, CaseEvent, StaffUser
from api.services.audit import audit_identity_view, verify_chain
from api.services.context import Services
from api.services.timeline import (
    GENESIS,
    NewEvent,
    case_lock,
    entry_hash,
    record_event,
    record_events,
)
from api.settings import ROOT
from tests.support import at, citizen_token, make_world, staff_token


async def _file_complaint(
    client: httpx.AsyncClient, citizen: dict[str, str], **extra: object
) -> Case:
    world = await make_world()
    body = {
        "card_code": world.card.code,
        "categories": ["RUDE"],
        "description": "执法人员态度恶劣。",
    }
    res = await client.post("/api/v1/complaints", json={**body, **extra}, headers=citizen)
    assert res.status_code == 201, res.text
    return await Case.get(ticket_no=res.json()["ticket_no"])


async def _worked_case(client: httpx.AsyncClient) -> Case:
    """A complaint filed, acknowledged, replied and rated through the HTTP API: 4 entries."""
    citizen = await citizen_token(client)
    ticket = (await _file_complaint(client, citizen, phone="13800138000")).ticket_no
    county = await staff_token(client, "county-430102")
    base = f"/api/v1/staff/complaints/{ticket}"
    assert (await client.post(f"{base}/acknowledge", headers=county)).status_code == 200
    res = await client.post(f"{base}/reply", json={"message": "已批评教育。"}, headers=county)
    assert res.status_code == 200, res.text
    res = await client.post(
        f"/api/v1/complaints/{ticket}/feedback", json={"satisfied": True}, headers=citizen
    )
    assert res.status_code == 200, res.text
    return await Case.get(ticket_no=ticket)


async def _entries(case: Case) -> list[CaseEvent]:
    return await CaseEvent.filter(case_id=case.id).order_by("seq")


async def _sql(statement: str, *values: object) -> None:
    await connections.get("default").execute_query(statement, list(values))


async def test_chain_is_intact_and_the_timeline_is_its_public_part(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00:00.123456"))
    case = await _worked_case(client)
    handler = await StaffUser.get(username="county-430102")
    viewed = await audit_identity_view(case, staff_id=handler.id)
    entries = await _entries(case)
    assert [e.kind for e in entries] == [
        "received",
        "acknowledged",
        "replied",
        "feedback_satisfied",
        "identity_viewed",
    ]
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert [e.prev_hash for e in entries] == [GENESIS] + [e.hash for e in entries[:-1]]
    assert await verify_chain() == [] and await verify_chain(case.id) == []

    assert viewed.id == entries[-1].id and not viewed.public
    assert (viewed.actor, viewed.staff_id, viewed.text) == (
        "staff",
        handler.id,
        "查看了举报人联系方式",
    )
    assert viewed.data == {"field": "contact_phone"}

    citizen = await citizen_token(client)
    mine = (await client.get(f"/api/v1/complaints/{case.ticket_no}", headers=citizen)).json()
    assert [e["text"] for e in mine["timeline"]] == [e.text for e in entries if e.public]
    county = await staff_token(client, "county-430102")
    staff = (await client.get(f"/api/v1/staff/complaints/{case.ticket_no}", headers=county)).json()
    # The handler's own view of the case shows the reporter's phone: that view is logged too.
    entries = await _entries(case)
    assert entries[-1].kind == "identity_viewed"
    assert [(e["kind"], e["public"]) for e in staff["events"]] == [
        (e.kind, e.public) for e in entries
    ]


async def test_hash_definition(client: httpx.AsyncClient, services: Services) -> None:
    clock.freeze(at("2025-03-03 10:00:00.000001"))
    case = await _file_complaint(client, await citizen_token(client))
    # A kind without a text template is written as its own text.
    entry = await record_event(case, "test_entry", public=False, data={"b": [1, "二"], "a": None})
    stored = (await _entries(case))[-1]
    payload = {
        "case_id": case.id,
        "seq": 2,
        "kind": "test_entry",
        "actor": "system",
        "staff_id": None,
        "public": False,
        "text": "test_entry",
        "data": {"a": None, "b": [1, "二"]},
        "created_at": "2025-03-03T10:00:00.000001+08:00",
        "prev_hash": stored.prev_hash,
    }
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert stored.hash == entry.hash == hashlib.sha256(canonical.encode()).hexdigest()


async def test_edited_entry_is_named(client: httpx.AsyncClient, services: Services) -> None:
    case = await _worked_case(client)
    replied = (await _entries(case))[2]
    await _sql("UPDATE case_event SET text = $1 WHERE id = $2", "已答复：情况不属实。", replied.id)
    [problem] = await verify_chain()
    assert (problem.ticket_no, problem.event_id, problem.seq) == (case.ticket_no, replied.id, 3)
    assert problem.kind == "hash_mismatch"


async def test_deleted_entry_is_caught(client: httpx.AsyncClient, services: Services) -> None:
    case = await _worked_case(client)
    entries = await _entries(case)
    await _sql("DELETE FROM case_event WHERE id = $1", entries[1].id)
    [problem] = await verify_chain()
    assert (problem.kind, problem.event_id, problem.seq) == ("seq_gap", entries[2].id, 3)


async def test_deleting_the_first_entry_or_the_whole_log_is_caught(
    client: httpx.AsyncClient, services: Services
) -> None:
    case = await _worked_case(client)
    entries = await _entries(case)
    await _sql("DELETE FROM case_event WHERE id = $1", entries[0].id)
    assert [(p.kind, p.event_id) for p in await verify_chain()] == [("seq_gap", entries[1].id)]
    await _sql("DELETE FROM case_event WHERE case_id = $1", case.id)
    [problem] = await verify_chain()
    assert (problem.ticket_no, problem.kind, problem.event_id) == (
        case.ticket_no,
        "no_entries",
        None,
    )


async def test_reordered_entries_are_caught(client: httpx.AsyncClient, services: Services) -> None:
    case = await _worked_case(client)
    _, second, third, _ = await _entries(case)
    # Swap the places of entries 2 and 3 (seq and time), going round the unique (case, seq) index.
    await _sql("UPDATE case_event SET seq = -1 WHERE id = $1", second.id)
    await _sql(
        "UPDATE case_event SET seq = 2, created_at = $1 WHERE id = $2", second.created_at, third.id
    )
    await _sql(
        "UPDATE case_event SET seq = 3, created_at = $1 WHERE id = $2", third.created_at, second.id
    )
    [problem] = await verify_chain()
    assert (problem.kind, problem.event_id, problem.seq) == ("prev_hash_mismatch", third.id, 2)


async def test_swapped_contents_are_caught(client: httpx.AsyncClient, services: Services) -> None:
    case = await _worked_case(client)
    _, second, third, _ = await _entries(case)
    # Swap what entries 2 and 3 say, hashes included: the chain no longer adds up at entry 2.
    for target, source in ((second, third), (third, second)):
        await _sql(
            "UPDATE case_event SET kind = $1, text = $2, hash = $3 WHERE id = $4",
            source.kind,
            source.text,
            source.hash,
            target.id,
        )
    [problem] = await verify_chain()
    assert (problem.kind, problem.event_id, problem.seq) == ("hash_mismatch", second.id, 2)


async def test_changed_prev_hash_is_caught(client: httpx.AsyncClient, services: Services) -> None:
    case = await _worked_case(client)
    fourth = (await _entries(case))[3]
    await _sql("UPDATE case_event SET prev_hash = $1 WHERE id = $2", "f" * 64, fourth.id)
    [problem] = await verify_chain(case.id)
    assert (problem.kind, problem.event_id, problem.seq) == ("prev_hash_mismatch", fourth.id, 4)


async def test_verify_streams_in_chunks_and_names_each_broken_case(
    client: httpx.AsyncClient, services: Services
) -> None:
    case = await _worked_case(client)
    other = await Case.create(
        **{
            k: v
            for k, v in (await Case.get(id=case.id).values()).items()
            if k not in ("id", "ticket_no")
        },
        ticket_no="PY250303OTHER001",
    )
    for n in range(5):
        await record_event(other, "note", public=False, text=f"备注 {n}")
    assert await verify_chain(chunk_size=2) == []
    broken = [(await _entries(case))[1], (await _entries(other))[3]]
    for entry in broken:
        await _sql("UPDATE case_event SET actor = 'citizen' WHERE id = $1", entry.id)
    for size in (1, 2, 3, 1000):
        problems = await verify_chain(chunk_size=size)
        assert [(p.ticket_no, p.event_id) for p in problems] == [
            (case.ticket_no, broken[0].id),
            (other.ticket_no, broken[1].id),
        ]


async def _cli(database_url: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "PINGYI_DATABASE_URL": database_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.audit",
        "verify",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_cli_verifies_and_names_the_broken_entry(
    client: httpx.AsyncClient, services: Services
) -> None:
    case = await _worked_case(client)
    url = services.settings.database_url
    code, out = await _cli(url)
    assert code == 0, out
    assert "审计链完整 / audit chain intact (4 entries, 1 cases)" in out
    assert (await _cli(url, "--case", "PY000000NOSUCH"))[0] == 2

    replied = (await _entries(case))[2]
    await _sql("UPDATE case_event SET text = 'x' WHERE id = $1", replied.id)
    code, out = await _cli(url)
    assert code == 1, out
    assert case.ticket_no in out and f"#{replied.id} (seq 3)" in out and "hash mismatch" in out
    code, out = await _cli(url, "--case", case.ticket_no)
    assert code == 1 and f"#{replied.id} (seq 3)" in out, out


async def test_concurrent_writers_take_turns(client: httpx.AsyncClient, services: Services) -> None:
    assert case_lock(1, None).sql().endswith("FOR NO KEY UPDATE")  # the lock record_event takes
    case = await _file_complaint(client, await citizen_token(client))

    async def note(n: int) -> CaseEvent:
        async with in_transaction() as conn:
            entry = await record_event(
                case, "note", public=False, conn=conn, data={"n": n}, text=f"备注 {n}"
            )
            await asyncio.sleep(0.01)  # hold the lock a moment so the others pile up
            return entry

    written = await asyncio.gather(*(note(n) for n in range(10)))
    assert sorted(e.seq for e in written) == list(range(2, 12))
    assert [e.seq for e in await _entries(case)] == list(range(1, 12))
    assert await verify_chain() == []


# --- the chain's head, anchored on the case row -------------------------------------------------


async def test_every_entry_moves_the_anchor_in_its_transaction(
    client: httpx.AsyncClient, services: Services
) -> None:
    case = await _worked_case(client)
    entries = await _entries(case)
    row = await Case.get(id=case.id)
    assert (row.audit_seq, row.audit_hash) == (4, entries[-1].hash)
    # Entries of a transaction that rolls back leave the anchor where it was.
    try:
        async with in_transaction() as conn:
            await record_event(case, "note", public=False, conn=conn, text="撤回")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    row = await Case.get(id=case.id)
    assert (row.audit_seq, row.audit_hash) == (4, entries[-1].hash)
    assert await verify_chain() == []


async def test_deleting_the_last_entry_is_caught(
    client: httpx.AsyncClient, services: Services
) -> None:
    case = await _worked_case(client)
    entries = await _entries(case)
    await _sql("DELETE FROM case_event WHERE id = $1", entries[-1].id)
    [problem] = await verify_chain()
    assert (problem.ticket_no, problem.kind, problem.event_id, problem.seq) == (
        case.ticket_no,
        "tail_missing",
        None,
        4,
    )
    assert "seq 4" in problem.describe() and "tail missing" in problem.describe()
    # The last two, too: the chain that is left adds up, its end is not where the case says.
    await _sql("DELETE FROM case_event WHERE id = $1", entries[-2].id)
    assert [(p.kind, p.seq) for p in await verify_chain(case.id)] == [("tail_missing", 3)]


async def _rewrite(entry: CaseEvent, **changes: object) -> CaseEvent:
    """What someone with database access would do: change the entry and recompute its hash."""
    for name, value in changes.items():
        setattr(entry, name, value)
    entry.hash = entry_hash(entry)
    await _sql(
        "UPDATE case_event SET text = $1, prev_hash = $2, hash = $3 WHERE id = $4",
        entry.text,
        entry.prev_hash,
        entry.hash,
        entry.id,
    )
    return entry


async def test_a_tail_rewritten_with_recomputed_hashes_is_caught_by_the_anchor(
    client: httpx.AsyncClient, services: Services
) -> None:
    case = await _worked_case(client)
    *_, replied, rated = await _entries(case)
    # The reply and everything after it rewritten, each hash recomputed: a consistent chain.
    replied = await _rewrite(replied, text="已答复：情况不属实。")
    await _rewrite(rated, prev_hash=replied.hash)
    [problem] = await verify_chain()
    assert (problem.kind, problem.event_id, problem.seq) == ("anchor_mismatch", rated.id, 4)
    code, out = await _cli(services.settings.database_url, "--case", case.ticket_no)
    assert code == 1 and f"#{rated.id} (seq 4)" in out and "anchor mismatch" in out, out


async def test_an_entry_appended_outside_the_log_is_caught_by_the_anchor(
    client: httpx.AsyncClient, services: Services
) -> None:
    case = await _worked_case(client)
    last = (await _entries(case))[-1]
    forged = CaseEvent(
        case_id=case.id,
        seq=5,
        kind="note",
        actor="staff",
        public=False,
        text="内部备注：已核实",
        data={},
        created_at=clock.now(),
        prev_hash=last.hash,
    )
    forged.hash = entry_hash(forged)
    await forged.save()  # straight into the table, not through record_event
    [problem] = await verify_chain()
    assert (problem.kind, problem.event_id, problem.seq) == ("anchor_mismatch", forged.id, 5)


async def test_batched_entries_anchor_every_case(
    client: httpx.AsyncClient, services: Services
) -> None:
    first = await _worked_case(client)
    body = {
        "card_code": (await Card.get(officer__cert_no="43010299001")).code,
        "categories": ["RUDE"],
        "description": "态度恶劣。",
    }
    res = await client.post("/api/v1/complaints", json=body, headers=await citizen_token(client))
    second = await Case.get(ticket_no=res.json()["ticket_no"])
    async with in_transaction() as conn:
        written = await record_events(
            [
                NewEvent(first, "note", public=False, text_values={"text": "甲"}),
                NewEvent(second, "note", public=False, text_values={"text": "乙"}),
                NewEvent(first, "note", public=False, text_values={"text": "丙"}),
            ],
            conn=conn,
        )
    heads = {
        c.id: (c.audit_seq, c.audit_hash) for c in await Case.filter(id__in=[first.id, second.id])
    }
    assert heads == {first.id: (6, written[2].hash), second.id: (2, written[1].hash)}
    assert await verify_chain() == []
