"""Several worker processes against one PostgreSQL: every escalation step fires once, every SMS once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from api import clock
from api.fakes.sms import FakeSmsServer
from api.models import Citizen, EscalationStep, SmsOutbox
from api.models.outbox import OutboxStatus
from api.schemas import ComplaintCreate
from api.services import citizen_cases
from api.services.context import Services
from api.services.escalation import due_steps
from api.settings import ROOT
from tests.conftest import REDIS_PREFIX, REDIS_URL, SMS_KEY, SMS_SECRET
from tests.support import at, make_world

CASES = 30


def _policy_without_quiet_hours(tmp_path: Path) -> Path:
    # The workers run on the real clock; at night quiet hours would hold routine SMS back.
    text = (ROOT / "config" / "sla.toml").read_text().replace("enabled = true", "enabled = false")
    path = tmp_path / "sla.toml"
    path.write_text(text)
    return path


def _worker(database_url: str, sms: FakeSmsServer, policy: Path) -> subprocess.Popen[bytes]:
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
        "PINGYI_WORKER_BATCH": "20",
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
    assert len(everything) == len(rows) + CASES
    assert all(r.status == OutboxStatus.SENT and r.attempts == 1 for r in everything)
    assert sorted(m["out_id"] for m in sms_fake.received) == sorted(r.out_id for r in everything)


async def test_worker_stops_on_sigterm(
    services: Services, sms_fake: FakeSmsServer, tmp_path: Path
) -> None:
    worker = _worker(
        services.settings.database_url, sms_fake, _policy_without_quiet_hours(tmp_path)
    )
    await asyncio.sleep(1.5)
    worker.terminate()
    assert worker.wait(timeout=15) == 0
