"""The worker: a process of its own that fires due escalation steps and sends the SMS outbox
and the citizens' WeChat subscribe messages.

Several workers may run against one database: claims use row locks (``FOR UPDATE SKIP LOCKED``)
and conditional updates, so each step fires once and each SMS row is sent by one worker.

Firing and sending are two loops side by side: a burst of due steps is fired at database speed,
not at the pace of the SMS provider, and a slow or throttled provider never delays a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from api import db, fieldcrypt
from api.redis import open_redis
from api.services.context import Services, build_context
from api.services.escalation import fire_pass
from api.settings import Settings, get_settings
from api.workers.sms_sender import send_due_sms
from api.workers.wechat_sender import send_due_wechat

log = logging.getLogger("pingyi.worker")

Pass = Callable[[Services], Awaitable[int]]


async def fire_once(services: Services) -> int:
    """One firing pass; returns how many due steps it took (fired or cancelled)."""
    return (await fire_pass(services, limit=services.settings.worker_batch)).claimed


async def send_once(services: Services) -> int:
    return await send_due_sms(services, limit=services.settings.worker_batch)


async def message_once(services: Services) -> int:
    """Subscribe messages to citizens (their own outbox, their own loop)."""
    return await send_due_wechat(services, limit=services.settings.worker_batch)


async def run_once(services: Services) -> int:
    """One pass of each loop, in order: fire what is due, then send what is queued."""
    return await fire_once(services) + await send_once(services) + await message_once(services)


async def _loop(services: Services, stop: asyncio.Event, work: Pass, name: str) -> None:
    """Runs ``work`` back to back while it finds a full batch, else waits one poll interval."""
    poll = services.settings.worker_poll_seconds
    while not stop.is_set():
        try:
            done = await work(services)
        except Exception:
            log.exception("%s pass failed; retrying after the poll interval", name)
            done = 0
        if done < services.settings.worker_batch:
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll)
            except TimeoutError:
                pass


async def run_until(services: Services, stop: asyncio.Event) -> None:
    await asyncio.gather(
        _loop(services, stop, fire_once, "firing"),
        _loop(services, stop, send_once, "sending"),
        _loop(services, stop, message_once, "messaging"),
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
