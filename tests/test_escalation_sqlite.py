"""The batch path on the embedded default (SQLite, through the ORM): the same rows as on
PostgreSQL, without falling back to one step at a time. Run in a process of its own, since the
test session's Tortoise is bound to PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent

FIRE = """
import asyncio, sys
from api import clock, db
from api.models import CaseClock, CaseEvent, EscalationStep, SmsOutbox
from api.redis import open_redis
from api.services import escalation
from api.services.audit import verify_chain
from api.services.context import build_context
from api.services.escalation import fire_due_steps
from api.settings import Settings
from tests.support import at, file_cases, make_world

async def alone(*args, **kwargs):
    raise AssertionError("the batch fell back to one step at a time")

async def scenario(services):
    clock.freeze(at("2025-03-03 10:00"))
    await file_cases(services, await make_world(), 5)
    escalation._fire_alone = alone
    clock.freeze(at("2025-03-03 11:50"))  # the 签收 warnings (50 %, 80 %)
    assert await fire_due_steps(services, limit=200) == 10
    clock.freeze(at("2025-03-03 12:00"))  # the 签收 deadline
    assert await fire_due_steps(services, limit=200) == 5
    assert await fire_due_steps(services, limit=200) == 0
    assert await EscalationStep.filter(status="fired").count() == 15
    warned = await SmsOutbox.filter(template="sla_warning").values_list("phone", flat=True)
    assert set(warned) == {"13900430102"} and len(warned) == 10  # never the accused officer
    assert await SmsOutbox.filter(template="sla_overdue").count() == 10
    assert await CaseEvent.filter(kind__in=("sla_warning", "sla_overdue")).count() == 15
    assert await CaseClock.filter(breached_at=clock.now()).count() == 5
    assert await verify_chain() == []

async def main(url, redis_url, prefix):
    await db.migrate(url)
    settings = Settings(database_url=url, redis_url=redis_url, redis_prefix=prefix,
                        notify_new_cases=False)
    redis = open_redis(redis_url)
    try:
        await scenario(build_context(settings, redis))
    finally:  # else the SQLite connection's thread keeps a failed run alive
        await redis.aclose()
        await db.close_db()

asyncio.run(main(*sys.argv[1:]))
"""


def test_a_batch_fires_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'pingyi.sqlite3'}"
    prefix = f"pingyi-test-sqlite-{os.getpid()}:"
    done = subprocess.run(
        [sys.executable, "-c", FIRE, url, REDIS_URL, prefix],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
