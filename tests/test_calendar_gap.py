"""Next year's calendar missing (DOMAIN.md: "alert when next year is missing"): checked at worker
start and daily, alerted once across workers and restarts, flagged on /healthz from the database.

On 2026-12-04 this is the real situation: chinesecalendar 1.11.0 knows years up to 2026.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path

import httpx

from api import clock
from api.fakes.sms import FakeSmsServer
from api.models import CalendarGap, CalendarOverride, SmsOutbox, Unit
from api.services.calendar_alert import check_next_year, year_known
from api.services.context import Services
from tests.support import (
    at,
    make_world,
    policy_without_quiet_hours,
    start_worker,
    stop_workers,
    worker_env,
)


async def _health(client: httpx.AsyncClient) -> dict[str, object]:
    res = await client.get("/healthz")
    assert res.status_code == 200, res.text
    details: dict[str, object] = res.json()["details"]
    return details


async def _checks_at_once(services: Services, n: int) -> list[bool]:
    # Each in a context of its own, so each on a connection of its own, as separate workers.
    tasks = [
        asyncio.create_task(check_next_year(services), context=contextvars.Context())
        for _ in range(n)
    ]
    return list(await asyncio.gather(*tasks))


async def test_next_year_missing_is_alerted_once_and_flagged_from_the_database(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2026-12-04 10:00"))
    await make_world()
    assert not await year_known(2027)
    assert await _checks_at_once(services, 4) == [True] * 4
    alerts = await SmsOutbox.filter(template="calendar_alert")
    assert [(a.purpose, a.params) for a in alerts] == [("calendar_alert:2027", {"year": "2027"})]
    province = await Unit.get(code="43")
    assert alerts[0].phone == province.leader_phone

    # This process never computed a deadline in 2027: the flag comes from the database.
    services.unknown_years.clear()
    details = await _health(client)
    assert details["calendar_unknown_years"] == [2027]
    assert details["calendar_alerts"] == {"2027": "queued"}

    # A restart, the next day's check: nothing new.
    clock.freeze(at("2026-12-05 00:05"))
    assert await check_next_year(services)
    assert await SmsOutbox.filter(template="calendar_alert").count() == 1
    assert await CalendarGap.all().count() == 1

    # The administrator enters 2027's schedule: the year is known, the flag goes.
    await CalendarOverride.create(date=date(2027, 2, 7), is_workday=True, note="春节调休")
    assert await year_known(2027)
    assert "calendar_unknown_years" not in await _health(client)


async def test_without_a_province_phone_the_alert_waits_and_is_written_once_later(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2026-12-04 10:00"))
    await make_world()
    await Unit.filter(code="43").update(leader_phone=None)
    assert await _checks_at_once(services, 2) == [False, False]  # retried a minute later
    assert not await SmsOutbox.filter(template="calendar_alert").exists()
    assert (await _health(client))["calendar_alerts"] == {"2027": "waiting"}
    await Unit.filter(code="43").update(leader_phone="13800000043")
    assert await _checks_at_once(services, 3) == [True] * 3
    alerts = await SmsOutbox.filter(template="calendar_alert")
    assert [a.phone for a in alerts] == ["13800000043"]


async def test_a_known_next_year_raises_nothing(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-12-04 10:00"))  # 2026 is in chinesecalendar 1.11.0
    await make_world()
    assert await check_next_year(services)
    assert not await CalendarGap.exists()
    assert not await SmsOutbox.exists()
    assert "calendar_unknown_years" not in await _health(client)


async def test_two_workers_starting_together_and_a_restart_alert_once(
    client: httpx.AsyncClient, services: Services, sms_fake: FakeSmsServer, tmp_path: Path
) -> None:
    """Real worker processes on the real clock (today's next year, whatever it is)."""
    await make_world()
    missing = not await year_known(clock.now().year + 1)
    env = worker_env(
        services.settings.database_url, sms_fake.endpoint, policy_without_quiet_hours(tmp_path)
    )
    logs = [tmp_path / f"worker-{n}.log" for n in range(3)]
    workers = [start_worker(env, logs[0]), start_worker(env, logs[1])]
    try:
        await _until(lambda: all(b"worker started" in p.read_bytes() for p in logs[:2]))
        if missing:
            await _until_sent(sms_fake, 1)
        stop_workers(workers)
        workers = [start_worker(env, logs[2])]  # a restart
        await _until(lambda: b"worker started" in logs[2].read_bytes())
        await asyncio.sleep(1.0)  # its start-up check has run
    finally:
        stop_workers(workers)
    alerts = await SmsOutbox.filter(template="calendar_alert")
    assert len(alerts) == int(missing)
    assert all(a.status == "sent" and a.attempts == 1 for a in alerts)
    assert Counter(m["out_id"] for m in sms_fake.received) == {a.out_id: 1 for a in alerts}
    if missing:
        services.unknown_years.clear()
        assert (await _health(client))["calendar_unknown_years"] == [clock.now().year + 1]


async def _until(ready: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not await asyncio.to_thread(ready):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def _until_sent(fake: FakeSmsServer, count: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while await SmsOutbox.filter(template="calendar_alert", status="sent").count() < count:
        assert time.monotonic() < deadline, f"{len(fake.received)} SMS received"
        await asyncio.sleep(0.1)
