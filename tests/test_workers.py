"""Several worker processes against one PostgreSQL: every escalation step fires once, every SMS once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

from api import clock
from api.fakes.sms import FakeSmsServer
from api.models import Citizen, EscalationStep, SmsOutbox
from api.models.outbox import OutboxStatus
from api.schemas import ComplaintCreate
from api.services import citizen_cases
from api.services.calendar_alert import year_known
from api.services.context import Services
from api.services.escalation import due_steps
from api.services.escalation_store import CLAIM_SQL, LOCK_CASES_SQL
from api.settings import ROOT
from tests.conftest import REDIS_PREFIX, REDIS_URL, SMS_KEY, SMS_SECRET
from tests.support import at, clone_case, file_cases, make_world

CASES = 30


def _policy_without_quiet_hours(tmp_path: Path) -> Path:
    # The workers run on the real clock; at night quiet hours would hold routine SMS back.
    text = (ROOT / "config" / "sla.toml").read_text().replace("enabled = true", "enabled = false")
    path = tmp_path / "sla.toml"
    path.write_text(text)
    return path


def _worker(
    database_url: str, sms: FakeSmsServer, policy: Path, *, batch: int = 20
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PINGYI_ENVIRONMENT": "test",
        "PINGYI_DATABASE_URL": database_url,
        "PINGYI_REDIS_URL": REDIS_URL,
        "PINGYI_REDIS_PREFIX": REDIS_PREFIX,
        "PINGYI_SMS_ENDPOINT": sms.endpoint,
        "PINGYI_SMS_PROTOCOL": "http",
        "PINGYI_SMS_ACCESS_KEY_ID": SMS_KEY,
        "PINGYI_SMS_ACCESS_KEY_SECRET": SMS_SECRET,
        "PINGYI_SLA_POLICY": str(policy),
        "PINGYI_WORKER_POLL_SECONDS": "0.2",
        "PINGYI_WORKER_BATCH": str(batch),
        # One SMS per reminder here: digests are covered by tests/test_faults.py.
        "PINGYI_SMS_DIGEST_SECONDS": "0",
    }
    return subprocess.Popen([sys.executable, "-m", "api.workers"], env=env, cwd=ROOT)


async def _settled() -> bool:
    pending = await EscalationStep.filter(status="pending", due_at__lte=clock.now()).count()
    unsent = await SmsOutbox.filter(status__in=(OutboxStatus.PENDING, OutboxStatus.SENDING)).count()
    return pending == 0 and unsent == 0


async def test_claim_query_skips_locked_rows(clean_db: str) -> None:
    sql = due_steps(limit=10).sql()
    assert "FOR UPDATE SKIP LOCKED" in sql and "ORDER BY" in sql
    # What the worker sends on PostgreSQL, and its case locks: neither waits for a holder.
    assert "FOR UPDATE SKIP LOCKED" in CLAIM_SQL and "ORDER BY due_at, id" in CLAIM_SQL
    assert "ORDER BY id FOR NO KEY UPDATE SKIP LOCKED" in " ".join(LOCK_CASES_SQL.split())


async def test_two_workers_fire_each_step_once(
    services: Services, sms_fake: FakeSmsServer, tmp_path: Path
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    citizen = await Citizen.create(openid="o-worker-test")
    body = ComplaintCreate(
        card_code=world.card.code, categories=["RUDE"], description="态度恶劣，拒不出示证件。"
    )
    for _ in range(CASES):
        await citizen_cases.file_complaint(services, citizen, body)
    steps = await EscalationStep.filter(status="pending").count()
    clock.reset()  # the workers run on the real clock: every step is long overdue

    database_url = services.settings.database_url
    policy = _policy_without_quiet_hours(tmp_path)
    workers = [_worker(database_url, sms_fake, policy) for _ in range(2)]
    try:
        for _ in range(300):
            await asyncio.sleep(0.2)
            if await _settled():
                break
        assert all(w.poll() is None for w in workers), "a worker died"
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=20)

    assert await _settled()
    assert await EscalationStep.filter(status="fired").count() == steps
    rows = await SmsOutbox.filter(step_id__isnull=False)
    # Per clock (签收, 答复): 2 leaders at the deadline + 1 province. Warnings that only fire after
    # their deadline has passed are superseded by the deadline's own SMS: no catch-up storm.
    assert len(rows) == CASES * 2 * 3
    assert not [r for r in rows if r.purpose.endswith(("warn_50", "warn_80"))]
    assert len({(r.step_id, r.phone) for r in rows}) == len(rows)
    assert all(r.status == OutboxStatus.SENT and r.attempts == 1 for r in rows)
    everything = await SmsOutbox.all()  # the escalations, and each case's new-case notice
    # The workers run on today's date: a missing calendar for next year is alerted, once.
    alerts = [r for r in everything if r.template == "calendar_alert"]
    assert len(alerts) == (0 if await year_known(clock.now().year + 1) else 1)
    assert len(everything) == len(rows) + CASES + len(alerts)
    assert all(r.status == OutboxStatus.SENT and r.attempts == 1 for r in everything)
    assert sorted(m["out_id"] for m in sms_fake.received) == sorted(r.out_id for r in everything)


BURST = 1_000


async def test_two_workers_fire_a_thousand_cases_breaching_at_once_exactly_once(
    services: Services, sms_fake: FakeSmsServer, tmp_path: Path
) -> None:
    """Issue 3: 1,000 cases whose 签收 deadlines fall at the same instant, with two worker
    processes running: every due step fires once, one outbox row per (step, phone), and the
    provider receives each OutId once."""
    services.settings.notify_new_cases = False
    try:
        world = await make_world()
        # On the real clock: received 2 h minus a lead ago, so the deadlines fall just after the
        # workers are up (the warnings before them are long due and fire late, without SMS).
        lead = timedelta(seconds=8)
        received = clock.now() - timedelta(hours=2) + lead
        clock.freeze(received)
        (ticket,) = await file_cases(services, world, 1)
        await clone_case(ticket, BURST - 1)
        clock.reset()
    finally:
        services.settings.notify_new_cases = True
    deadline = received + timedelta(hours=2)
    # The warnings fired in their time, as they would have (their SMS are not this test's).
    warned = EscalationStep.filter(step__startswith="warn_", clock__kind="acknowledge")
    await warned.update(status="fired", fired_at=received + timedelta(hours=1))
    due = EscalationStep.filter(due_at__lte=deadline, status="pending")
    steps = await due.count()
    assert steps == BURST  # the deadline of each 签收 clock, all at the same instant

    database_url = services.settings.database_url
    policy = _policy_without_quiet_hours(tmp_path)
    workers = [_worker(database_url, sms_fake, policy, batch=500) for _ in range(2)]
    try:
        await asyncio.sleep(max(0.0, (deadline - clock.now()).total_seconds()))
        for _ in range(600):
            await asyncio.sleep(0.2)
            if await _settled():
                break
        assert all(w.poll() is None for w in workers), "a worker died"
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=20)

    assert await _settled()
    at_deadline = EscalationStep.filter(status="fired", due_at=deadline, fired_at__gte=deadline)
    assert await at_deadline.count() == steps
    assert await EscalationStep.filter(status="cancelled").count() == 0
    assert await EscalationStep.filter(fired_at__isnull=False, status="pending").count() == 0
    rows = await SmsOutbox.exclude(template="calendar_alert")  # next year's, if missing
    # At the deadline: the 大队's leader and the 支队's, one row each per case, nothing else.
    assert {r.purpose for r in rows} == {"acknowledge:due"}
    assert len(rows) == BURST * 2
    assert len({(r.step_id, r.phone) for r in rows}) == len(rows)
    assert all(r.status == OutboxStatus.SENT and r.attempts == 1 for r in rows)
    received_ids = Counter(m["out_id"] for m in sms_fake.received)
    assert set(received_ids.values()) == {1}
    assert set(received_ids) == {r.out_id for r in await SmsOutbox.all()}


async def test_worker_stops_on_sigterm(
    services: Services, sms_fake: FakeSmsServer, tmp_path: Path
) -> None:
    worker = _worker(
        services.settings.database_url, sms_fake, _policy_without_quiet_hours(tmp_path)
    )
    await asyncio.sleep(1.5)
    worker.terminate()
    assert worker.wait(timeout=15) == 0
