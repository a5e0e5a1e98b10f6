"""Faults the SLA engine must survive (issue 3), against real PostgreSQL, Redis and the SMS fake.

Crashes and concurrency use real worker processes (on the real clock: the data is made in the
past so that it is due); time-dependent behaviour uses ``run_once`` on the frozen clock.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from api import clock
from api.db import column
from api.fakes.sms import FakeSmsServer
from api.models import EscalationStep, SmsOutbox, Unit
from api.models.clock import StepStatus
from api.models.outbox import OutboxStatus
from api.services.context import Services
from api.services.escalation import fire_due_steps
from api.services.outbox import enqueue_sms, new_out_id
from api.workers.runner import run_once
from api.workers.sms_sender import send_due_sms
from tests.conftest import SMS_KEY, SMS_SECRET
from tests.support import (
    WorkerZygote,
    at,
    file_cases,
    make_world,
    officer_with_card,
    policy_without_quiet_hours,
    start_worker,
    stop_workers,
    worker_env,
)

KILLS = 20
PER_COUNTY = 2  # cases
# Routine SMS to distinct phones, never merged: most of the sending. Topped up during the kills
# so that every kill finds work left whatever the speed of the machine.
PLAIN_ROWS, PLAIN_LOW = 60, 30
COUNTIES = ("430102", "430103", "430104", "430111", "430203", "430302")


class SlowSmsServer(FakeSmsServer):
    """Answers after 20–80 ms like a real network, so that kills can land mid-request; counts the
    requests that came in and those in flight."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.started = self.in_flight = 0
        self._flight_lock = threading.Lock()

    def handle(self, method: str, params: dict[str, str]) -> tuple[int, Any] | None:
        with self._flight_lock:
            self.started += 1
            self.in_flight += 1
        try:
            time.sleep(random.uniform(0.02, 0.08))
            return super().handle(method, params)
        finally:
            with self._flight_lock:
                self.in_flight -= 1


@pytest.fixture(autouse=True)
def _no_new_case_notices(services: Services) -> Iterator[None]:
    # These tests count escalation reminders per phone; new-case notices are tested elsewhere.
    services.settings.notify_new_cases = False
    yield
    services.settings.notify_new_cases = True


@pytest.fixture
def slow_sms() -> Iterator[SlowSmsServer]:
    fake = SlowSmsServer(access_keys={SMS_KEY: SMS_SECRET}).start()
    yield fake
    fake.stop()


async def _open_work() -> tuple[int, int]:
    steps = await EscalationStep.filter(status=StepStatus.PENDING, due_at__lte=clock.now()).count()
    rows = await SmsOutbox.filter(status__in=(OutboxStatus.PENDING, OutboxStatus.SENDING)).count()
    return steps, rows


async def _wait_until_settled(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await _open_work() == (0, 0):
            return True
        await asyncio.sleep(0.2)
    return False


async def _ready(log_path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while b"worker started" not in await asyncio.to_thread(log_path.read_bytes):
        assert time.monotonic() < deadline, "worker did not start"
        await asyncio.sleep(0.05)


async def _cases_in_counties(services: Services, per_county: int) -> None:
    world = await make_world()
    cards = [world.card, world.other_card]
    for n, code in enumerate(COUNTIES[2:]):
        cards.append((await officer_with_card(code, f"执法{n}", f"{code}99001"))[1])
    for card in cards:
        await file_cases(services, replace(world, card=card), per_county)


async def _plain_rows(count: int, *, at_time: datetime) -> None:
    first = await SmsOutbox.filter(purpose="plain").count()
    await SmsOutbox.bulk_create(
        [
            SmsOutbox(
                phone=f"1380000{i:04d}",
                template="new_case",
                params={
                    "ticket": f"PYPLAIN{i:05d}",
                    "clock": "签收",
                    "unit": "测试",
                    "due": "尽快",
                },
                purpose="plain",
                next_attempt_at=at_time,
                out_id=new_out_id(),
                created_at=at_time,
            )
            for i in range(first, first + count)
        ]
    )


async def _settled_rows(ids: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    query = SmsOutbox.filter(id__in=ids, status=OutboxStatus.SENDING)
    while ids and await query.exists():
        assert time.monotonic() < deadline, "claims of a dead worker were not taken back"
        await asyncio.sleep(0.05)


async def _requests_started(fake: SlowSmsServer, count: int, seconds: float) -> None:
    until, deadline = fake.started + count, time.monotonic() + seconds
    # The counter belongs to the fake's handler threads: polled, not awaited.
    while fake.started < until and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


async def test_sigkill_while_sending_loses_nothing_and_resends_at_most_once(
    services: Services, slow_sms: SlowSmsServer, tmp_path: Path
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    await _cases_in_counties(services, per_county=PER_COUNTY)
    steps = await EscalationStep.filter(status=StepStatus.PENDING).count()
    clock.reset()  # the workers run on the real clock: every step is long overdue
    await _plain_rows(PLAIN_ROWS, at_time=clock.now() - timedelta(minutes=5))
    env = worker_env(
        services.settings.database_url,
        slow_sms.endpoint,
        policy_without_quiet_hours(tmp_path),
        sms_lease_seconds=1,
        sms_timeout=0.5,
        sms_digest_seconds=2,
        worker_poll_seconds=0.1,
        worker_batch=5,
    )
    rng = random.Random(os.environ.get("PINGYI_FAULT_SEED", "3"))
    zygote = WorkerZygote(env)
    with_work = mid_request = taken_back = 0
    orphans: list[int] = []
    started = time.monotonic()
    try:
        for n in range(KILLS):
            if (await _open_work())[1] < PLAIN_LOW:
                await _plain_rows(PLAIN_ROWS, at_time=clock.now())
            log = tmp_path / f"worker-{n}.log"
            pid = zygote.spawn(log)
            await _ready(log)
            # The next crash comes once the last one is recovered from (its claims taken back
            # after their lease and settled): two crashes on one message would leave it
            # unconfirmed, by design (see test_outbox), and possibly never sent.
            await _settled_rows(orphans, 15.0)
            if n in (1, 5, 9, 13):  # not later: their retries come 15 s after
                slow_sms.drop_response_next()  # the answer is held until the worker gives up
            if n % 2:  # just after one of its first few requests went out
                await _requests_started(slow_sms, rng.randint(1, 6), 3.0)
                await asyncio.sleep(rng.uniform(0, 0.05))
            else:  # anywhere: firing steps, claiming, sending, recording, sleeping
                await asyncio.sleep(rng.uniform(0, 0.5))
            mid_request += slow_sms.in_flight > 0
            with_work += sum(await _open_work()) > 0
            zygote.kill(pid)
            orphans = await column(
                SmsOutbox.filter(status=OutboxStatus.SENDING, lease_until__isnull=False), "id"
            )
            taken_back += len(orphans)
        killing = time.monotonic() - started
        zygote.close()
        # The last worker runs to completion (a larger batch: it fires what is left faster).
        zygote = WorkerZygote({**env, "PINGYI_WORKER_BATCH": "50"})
        zygote.spawn(tmp_path / "final.log")
        settled = await _wait_until_settled(60)
        final = time.monotonic() - started - killing
    finally:
        zygote.close()
    assert settled, await _open_work()
    assert with_work == KILLS, "the workers ran out of work before the kills ended"

    # Every step fired exactly once, with exactly its SMS.
    assert await EscalationStep.filter(status=StepStatus.FIRED).count() == steps
    reminders = await SmsOutbox.filter(step_id__isnull=False)
    assert len({(r.step_id, r.phone) for r in reminders}) == len(reminders)
    # counties × cases × clocks (签收, 答复) × (2 leaders at the deadline + the province)
    assert len(reminders) == len(COUNTIES) * PER_COUNTY * 2 * 3

    # Every SMS reached the fake once, or twice with the same OutId after an unknown outcome.
    rows = {r.id: r for r in await SmsOutbox.all()}
    leads = [r for r in rows.values() if r.merged_into_id is None]
    seen = Counter(m["out_id"] for m in slow_sms.received)
    assert set(seen) == {r.out_id for r in leads}, "lost, or sent under an unknown OutId"
    for lead in leads:
        assert seen[lead.out_id] == 1 or (seen[lead.out_id] == 2 and lead.uncertain_attempts)
        assert lead.status in (OutboxStatus.SENT, OutboxStatus.UNCONFIRMED), lead.status
    for row in rows.values():
        if row.merged_into_id is not None:
            lead = rows[row.merged_into_id]
            assert (row.status, row.biz_id) == (lead.status, lead.biz_id)
    twice = [m for m in slow_sms.received if seen[m["out_id"]] == 2]
    by_out_id: dict[str, list[Any]] = {}
    for message in twice:
        by_out_id.setdefault(message["out_id"], []).append((message["phone"], message["params"]))
    assert all(a == b for a, b in by_out_id.values()), "a resend must repeat the same message"
    print(
        f"\nSIGKILL: {KILLS} kills in {killing:.1f} s ({mid_request} with a request in flight,"
        f" {taken_back} claims orphaned), then {final:.1f} s to settle;"
        f" {len(leads)} SMS for {len(rows)} rows"
        f" ({sum(r.template == 'digest' for r in leads)} digests);"
        f" {sum(1 for r in leads if r.uncertain_attempts)} unknown outcomes,"
        f" {len(by_out_id)} resent with the same OutId,"
        f" {sum(r.status == OutboxStatus.UNCONFIRMED for r in leads)} unconfirmed"
        f" (fake counts {[seen[r.out_id] for r in leads if r.status == 'unconfirmed']});"
        f" fake saw {slow_sms.attempts} requests, {len(slow_sms.received)} accepted"
    )


async def test_two_workers_send_one_digest_per_phone_per_window(
    services: Services, sms_fake: FakeSmsServer, tmp_path: Path
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    await file_cases(services, world, 30)
    steps = await EscalationStep.filter(status=StepStatus.PENDING).count()
    clock.reset()  # the workers run on the real clock: every step is long overdue
    window = 2
    env = worker_env(
        services.settings.database_url,
        sms_fake.endpoint,
        policy_without_quiet_hours(tmp_path),
        sms_digest_seconds=window,
        worker_batch=10,
        worker_poll_seconds=0.1,
    )
    zygote = WorkerZygote(env)
    try:
        for n in range(2):
            zygote.spawn(tmp_path / f"worker-{n}.log")
        settled = await _wait_until_settled(60)
    finally:
        zygote.close()
    assert settled, await _open_work()
    assert await EscalationStep.filter(status=StepStatus.FIRED).count() == steps
    reminders = await SmsOutbox.filter(step_id__isnull=False)
    assert len(reminders) == 30 * 2 * 3
    assert all(r.status == OutboxStatus.SENT for r in reminders)
    leads = await SmsOutbox.filter(merged_into_id__isnull=True)
    seen = Counter(m["out_id"] for m in sms_fake.received)
    assert seen == dict.fromkeys((r.out_id for r in leads), 1)
    by_phone: dict[str, list[datetime]] = {}
    # The digest window paces reminders; a new-case notice is not a reminder and goes at once,
    # as does the alert that next year's calendar is missing (the workers run on today's date).
    for lead in (r for r in leads if r.template not in ("new_case", "calendar_alert")):
        assert lead.claimed_at is not None
        by_phone.setdefault(lead.phone, []).append(lead.claimed_at)
    for phone, moments in by_phone.items():
        moments.sort()
        gaps = [(b - a).total_seconds() for a, b in pairwise(moments)]
        assert all(gap >= window for gap in gaps), (phone, gaps)
    print(f"\ntwo workers: {len(reminders)} reminders to {len(by_phone)} phones → {len(leads)} SMS")


async def _delete_prefixed(redis: Redis, prefix: str) -> int:
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
    return int(await redis.delete(*keys)) if keys else 0


async def test_redis_flushed_while_cases_are_pending_every_step_fires_on_time(
    services: Services, redis: Redis, sms_fake: FakeSmsServer, tmp_path: Path
) -> None:
    world = await make_world()
    # The worker's own prefix under the test one: flushing it cannot disturb another test run
    # sharing this Redis, and whatever the worker keeps in Redis is under it.
    prefix = f"{services.settings.redis_prefix}faults-{os.getpid()}:"
    env = worker_env(
        services.settings.database_url,
        sms_fake.endpoint,
        policy_without_quiet_hours(tmp_path),
        redis_prefix=prefix,
        sms_digest_seconds=0,
        worker_poll_seconds=0.2,
    )
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        await _ready(log)
        dues = [clock.now() + timedelta(seconds=s) for s in (3, 5, 7)]
        for due in dues:  # 签收 is 2 natural hours: filed 2 h before the wanted deadline
            clock.freeze(due - timedelta(hours=2))
            await file_cases(services, world, 1)
        clock.reset()
        for due in dues:
            await asyncio.sleep(max((due - clock.now()).total_seconds() - 1, 0))
            await _delete_prefixed(redis, prefix)  # a second before each deadline
        await asyncio.sleep(max((dues[-1] - clock.now()).total_seconds() + 2, 0))
        assert worker.poll() is None, "the worker died"
    finally:
        stop_workers([worker])
    fired = await EscalationStep.filter(step="due", clock__kind="acknowledge")
    assert len(fired) == 3 and all(s.status == StepStatus.FIRED for s in fired)
    lags = sorted((s.fired_at - s.due_at).total_seconds() for s in fired if s.fired_at)
    assert all(0 <= lag <= 2.0 for lag in lags), lags  # poll 0.2 s; issue target: p99 ≤ 2 s
    overdue = await SmsOutbox.filter(template="sla_overdue")
    assert len(overdue) == 6 and all(r.status == OutboxStatus.SENT for r in overdue)
    print(f"\nRedis flushed 3 times: deadline → fired lags {[round(x, 2) for x in lags]} s")


async def test_worker_down_for_an_hour_fires_in_order_without_an_sms_storm(
    services: Services, sms_fake: FakeSmsServer
) -> None:
    clock.freeze(at("2025-03-03 09:00"))
    world = await make_world()
    other = replace(world, card=world.other_card)
    for n in range(20):  # one case every 3 minutes, in two counties of one city
        clock.freeze(at("2025-03-03 09:00") + timedelta(minutes=3 * n))
        await file_cases(services, world if n % 2 else other, 1)
    # The worker was down from 09:00; it starts at 12:00, with every 签收 deadline passed.
    clock.freeze(at("2025-03-03 12:00"))
    passes = 0
    while True:  # small passes, as a worker with a small batch would make them
        fired = await fire_due_steps(services, limit=7)
        if not (fired + await send_due_sms(services)):
            break
        passes += 1
    reminders = await SmsOutbox.filter(step_id__isnull=False).order_by("id")
    assert len(reminders) == 20 * 2  # the leaders of the county and the city; late warnings dropped
    step_due = dict(await EscalationStep.all().values_list("id", "due_at"))
    firing_order = [step_due[r.step_id] for r in reminders]
    assert firing_order == sorted(firing_order)
    per_phone = Counter(m["phone"] for m in sms_fake.received)
    leaders = [(await Unit.get(code=code)).leader_phone for code in ("430102", "430103", "4301")]
    assert per_phone == dict.fromkeys(leaders, 1)  # one digest each, not 40 SMS
    clock.freeze(at("2025-03-03 12:05"))  # the digest window closes: the rest, merged again
    await run_once(services)
    per_phone = Counter(m["phone"] for m in sms_fake.received)
    assert set(per_phone) == set(leaders) and max(per_phone.values()) <= 2
    assert await SmsOutbox.filter(step_id__isnull=False, status=OutboxStatus.SENT).count() == 40
    print(f"\nworker down 1 h: 40 reminders → {sum(per_phone.values())} SMS in {passes} passes")


async def test_rate_limits_and_timeouts_are_retried_with_backoff_then_delivered(
    services: Services, sms_fake: FakeSmsServer
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    rows = [
        await enqueue_sms(
            services,
            phone=f"1390000000{i}",
            template="new_case",
            params={"ticket": f"T{i}"},
            purpose="t",
        )
        for i in range(3)
    ]
    sms_fake.fail_next("Throttling.User")
    sms_fake.fail_next("isv.BUSINESS_LIMIT_CONTROL", times=2)
    sms_fake.drop_response_next()  # then an answer that never comes (a read timeout)
    waits: list[tuple[int, float]] = []  # (attempt that failed, seconds until the next one)
    for _ in range(20):
        pending = [r for r in rows if r.status == OutboxStatus.PENDING]
        if not pending:
            break
        now = min(r.next_attempt_at for r in pending)
        clock.freeze(now)
        tried = {r.id: r.attempts for r in rows}
        await send_due_sms(services)
        for row in rows:
            await row.refresh_from_db()
            if row.status == OutboxStatus.PENDING and row.attempts > tried[row.id]:
                waits.append((row.attempts, (row.next_attempt_at - now).total_seconds()))
    assert [r.status for r in rows] == [OutboxStatus.SENT] * 3
    assert all(r.last_error is None for r in rows)
    # Throttling, flow control twice, the timeout: each followed by 15 s × 2^(n-1) (+ ≤ 20 %).
    assert sorted(a for a, _ in waits) == [1, 1, 1, 2]
    assert all(15 * 2 ** (a - 1) <= s <= 18 * 2 ** (a - 1) for a, s in waits), waits
    seen = Counter(m["out_id"] for m in sms_fake.received)
    assert sorted(seen.values()) == [1, 1, 2]  # the timed-out request, resent once (same OutId)
    resent = next(r for r in rows if seen[r.out_id] == 2)
    assert (resent.attempts, resent.uncertain_attempts) == (3, 1)
    assert sum(r.attempts for r in rows) == sms_fake.attempts == 7


async def test_illegal_number_and_template_errors_fail_at_once(
    services: Services, sms_fake: FakeSmsServer
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    bad = await enqueue_sms(
        services, phone="12345678901", template="new_case", params={"ticket": "x"}, purpose="t"
    )
    await send_due_sms(services)
    sms_fake.fail_next("isv.SMS_TEMPLATE_ILLEGAL")
    template = await enqueue_sms(
        services, phone="13900000009", template="new_case", params={"ticket": "y"}, purpose="t"
    )
    await send_due_sms(services)
    clock.advance(timedelta(days=1))
    await send_due_sms(services)
    for row, code in ((bad, "isv.MOBILE_NUMBER_ILLEGAL"), (template, "isv.SMS_TEMPLATE_ILLEGAL")):
        await row.refresh_from_db()
        assert (row.status, row.attempts) == (OutboxStatus.FAILED, 1)
        assert row.last_error and row.last_error.startswith(code)
    assert sms_fake.attempts == 2 and sms_fake.received == []


async def test_a_step_that_cannot_fire_does_not_block_the_others(
    services: Services, sms_fake: FakeSmsServer
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    await file_cases(services, world, 2)
    first = await EscalationStep.filter(step="due").order_by("id").first()
    assert first is not None
    # A step written by a newer release, which this worker does not know, falls due first.
    await EscalationStep.create(
        clock_id=first.clock_id,
        case_id=first.case_id,
        step="reopen",
        generation=99,
        due_at=at("2025-03-03 11:59"),
    )
    clock.freeze(at("2025-03-03 12:00"))
    await fire_due_steps(services)
    assert await EscalationStep.filter(step="due", status=StepStatus.FIRED).count() == 2
    unknown = await EscalationStep.get(step="reopen")
    assert unknown.status == StepStatus.PENDING  # left for a worker that knows it
    await send_due_sms(services)
    assert len(sms_fake.received) == 2  # a digest to each leader
