"""The worker: a process of its own that fires due escalation steps and sends the SMS outbox
and the citizens' WeChat subscribe messages.

Several workers may run against one database: claims use row locks (``FOR UPDATE SKIP LOCKED``)
and conditional updates, so each step fires once and each SMS row is sent by one worker.

Firing and sending are two loops side by side: a burst of due steps is fired at database speed,
not at the pace of the SMS provider, and a slow or throttled provider never delays a deadline.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime, time, timedelta

from api import clock, db, fieldcrypt
from api.redis import open_redis
from api.services.calendar_alert import check_next_year
from api.services.context import Services, build_context
from api.services.escalation import fire_pass
from api.services.intake import open_pending
from api.settings import Settings, get_settings
from api.workers.sms_sender import send_due_sms
from api.workers.wechat_sender import send_due_wechat

log = logging.getLogger("pingyi.worker")

Pass = Callable[[Services], Awaitable[int]]


async def fire_once(services: Services) -> int:
    """One firing pass; returns how many due steps it took (fired or cancelled)."""
    return (await fire_pass(services, limit=services.settings.worker_batch)).claimed


def _wait_for(next_due: datetime | None, poll: float) -> float:
    """Until the next step falls due, never longer than the poll interval (a step created or
    moved meanwhile by another process is seen at the next poll at the latest)."""
    if next_due is None:
        return poll
    return min(poll, max((next_due - clock.now()).total_seconds(), 0.0) + 0.005)


class _Lanes:
    """The extra lanes of a backlog. A pass whose claim comes back full starts them at once,
    before it fires its own batch; each fires passes back to back until one comes back short,
    in its own transaction on its own connection (a context of its own, so not nested in the
    claiming pass's transaction). While one lane waits for PostgreSQL another plans its batch,
    so both cores work (scripts/bench-sla); lanes claim as workers do (``SKIP LOCKED``,
    conditional updates), so each step still fires once."""

    def __init__(self, services: Services, stop: asyncio.Event) -> None:
        self.services, self.stop = services, stop
        self.tasks: list[asyncio.Task[None]] = []

    def claimed(self, count: int) -> None:
        if count >= self.services.settings.worker_batch and not self.tasks:
            extra = range(self.services.settings.worker_fire_lanes - 1)
            self.tasks = [
                asyncio.create_task(self.run(), context=contextvars.Context()) for _ in extra
            ]

    async def run(self) -> None:
        batch = self.services.settings.worker_batch
        while not self.stop.is_set():
            try:
                if (await fire_pass(self.services, limit=batch)).claimed < batch:
                    return
            except Exception:
                log.exception("firing pass failed; the lane stops")
                return

    async def join(self) -> None:
        await asyncio.gather(*self.tasks)


async def _fire_loop(services: Services, stop: asyncio.Event, drained: asyncio.Event) -> None:
    """Fires back to back while a pass takes a full batch (a backlog, fired in lanes: the send
    loops wait, see SENDERS_DEFER_SECONDS), else sleeps until the next step falls due or one poll
    interval."""
    poll, batch = services.settings.worker_poll_seconds, services.settings.worker_batch
    while not stop.is_set():
        lanes = _Lanes(services, stop)
        try:
            done = await fire_pass(services, limit=batch, on_claim=lanes.claimed)
            claimed, wait = done.claimed, _wait_for(done.next_due, poll)
        except Exception:
            log.exception("firing pass failed; retrying after the poll interval")
            claimed, wait = 0, poll
        if claimed >= batch:
            drained.clear()
            await lanes.run()  # this lane goes on with the backlog too
        await lanes.join()
        if claimed >= batch:
            continue
        drained.set()
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except TimeoutError:
            pass


async def send_once(services: Services) -> int:
    return await send_due_sms(services, limit=services.settings.worker_batch)


async def message_once(services: Services) -> int:
    """Subscribe messages to citizens (their own outbox, their own loop)."""
    return await send_due_wechat(services, limit=services.settings.worker_batch)


INTAKE_BATCH = 50  # cases opened per transaction: a citizen asking for one waits at most for these


async def intake_once(services: Services) -> int:
    """差评 follow-up cases still to be opened (api/services/intake.py)."""
    return await open_pending(services, limit=INTAKE_BATCH)


async def run_once(services: Services) -> int:
    """One pass of each loop, in order: open the 差评 cases, fire what is due, then send what is
    queued."""
    opened = await intake_once(services)
    return (
        opened
        + await fire_once(services)
        + await send_once(services)
        + await message_once(services)
    )


# Firing goes first: while the firing loop works through a backlog (its last pass took a full
# batch), the send loops wait for it — at most this long, so they are never starved — instead of
# taking the event loop and the database from it. A burst is fired at database speed; its SMS
# follow a moment later (scripts/bench-sla: firing lag is the target, delivery comes after).
SENDERS_DEFER_SECONDS = 5.0


CALENDAR_RETRY_SECONDS = 60.0


def _seconds_to_tomorrow() -> float:
    now = clock.to_china(clock.now())
    tomorrow = datetime.combine(now.date() + timedelta(days=1), time(0, 5), tzinfo=now.tzinfo)
    return (tomorrow - now).total_seconds()


async def _calendar_loop(services: Services, stop: asyncio.Event) -> None:
    """DOMAIN.md: "alert when next year is missing" — checked at start, then every day (every
    minute while the alert cannot be written yet)."""
    while not stop.is_set():
        try:
            done = await check_next_year(services)
        except Exception:
            log.exception("calendar check failed; retrying")
            done = False
        wait = _seconds_to_tomorrow() if done else CALENDAR_RETRY_SECONDS
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except TimeoutError:
            pass


async def _fired_through(drained: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(drained.wait(), timeout=SENDERS_DEFER_SECONDS)
    except TimeoutError:
        pass


async def _loop(
    services: Services,
    stop: asyncio.Event,
    work: Pass,
    name: str,
    *,
    drained: asyncio.Event,
    batch: int | None = None,
) -> None:
    """Runs ``work`` back to back while it finds a full batch, else waits one poll interval;
    before each pass, lets the firing loop work through its backlog first."""
    poll, full = services.settings.worker_poll_seconds, batch or services.settings.worker_batch
    while not stop.is_set():
        await _fired_through(drained)
        try:
            done = await work(services)
        except Exception:
            log.exception("%s pass failed; retrying after the poll interval", name)
            done = 0
        if done < full:
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll)
            except TimeoutError:
                pass


async def run_until(services: Services, stop: asyncio.Event) -> None:
    drained = asyncio.Event()
    drained.set()
    await asyncio.gather(
        _calendar_loop(services, stop),
        _fire_loop(services, stop, drained),
        _loop(services, stop, intake_once, "intake", drained=drained, batch=INTAKE_BATCH),
        _loop(services, stop, send_once, "sending", drained=drained),
        _loop(services, stop, message_once, "messaging", drained=drained),
    )


async def main(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    await db.init_db(settings.database_url)
    redis = open_redis(settings.redis_url)
    services = build_context(settings, redis)
    await fieldcrypt.check_stored_key()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker started (profile %s, poll %.1fs)",
        services.policy.name,
        settings.worker_poll_seconds,
    )
    try:
        await run_until(services, stop)
    finally:
        await redis.aclose()
        await db.close_db()
        log.info("worker stopped")
