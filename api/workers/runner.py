"""The worker: a process of its own that fires due escalation steps and sends the SMS outbox
and the citizens' WeChat subscribe messages.

Several workers may run against one database: claims use row locks (``FOR UPDATE SKIP LOCKED``)
and conditional updates, so each step fires once and each SMS row is sent by one worker.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from api import db
from api.redis import open_redis
from api.services.context import Services, build_context
from api.services.escalation import fire_due_steps
from api.settings import Settings, get_settings
from api.workers.sms_sender import send_due_sms
from api.workers.wechat_sender import send_due_wechat

log = logging.getLogger("pingyi.worker")


async def run_once(services: Services) -> int:
    """One pass: fire what is due, then send what is queued. Returns how much work was done."""
    batch = services.settings.worker_batch
    fired = await fire_due_steps(services, limit=batch)
    sent = await send_due_sms(services, limit=batch)
    sent += await send_due_wechat(services, limit=batch)  # subscribe messages to citizens
    return fired + sent


async def run_until(services: Services, stop: asyncio.Event) -> None:
    poll = services.settings.worker_poll_seconds
    while not stop.is_set():
        try:
            done = await run_once(services)
        except Exception:
            log.exception("worker pass failed; retrying after the poll interval")
            done = 0
        if done < services.settings.worker_batch:
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll)
            except TimeoutError:
                pass


async def main(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    await db.init_db(settings.database_url)
    redis = open_redis(settings.redis_url)
    services = build_context(settings, redis)
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
