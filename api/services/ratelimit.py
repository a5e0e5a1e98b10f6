"""Fixed-window request counters: per client IP in each worker; per caller and per citizen in Redis.

The per-IP limit is a flood guard in front of everything, the card scan included, so it costs no
round trip: each worker counts in its own memory (``LocalWindow``). With N workers a client whose
connections the kernel spreads over all of them gets up to N times ``rate_ip_per_minute`` (one
keep-alive connection stays with one worker); the quotas that must hold across workers — POSTs per
caller, complaints per citizen — are Redis counters (INCR + EXPIRE in one script), the counts of
the requests arriving together sent in one command (``RedisCounts``). A window is a slot of the
shared clock; a Redis key expires with it, and a worker's counts are cleared when its slot ends,
so neither holds more than one window of counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from api import clock
from api.errors import TooManyRequests

if TYPE_CHECKING:  # the services hold this module's LocalWindow
    from api.services.context import Services

log = logging.getLogger("pingyi.ratelimit")
TOO_MANY = "操作过于频繁，请{wait}后再试"
# INCR and EXPIRE of every key counted in one turn of the loop, in one command: the counts in
# the keys' order (ARGV: each key's time to live).
_HIT_ALL = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('incr', key)
  redis.call('expire', key, ARGV[i])
end
return counts
"""
_HIT_ALL_SHA = hashlib.sha1(_HIT_ALL.encode()).hexdigest()
# DECR only a live counter: on an expired key DECR would create one that never expires.
_REFUND = (
    "if redis.call('exists', KEYS[1]) == 1 then return redis.call('decr', KEYS[1]) end return 0"
)


@dataclass(frozen=True)
class Limit:
    name: str  # part of the Redis key: "ip", "post", "complaints"
    limit: int  # requests allowed per window; 0 or less switches this limit off
    window: int  # seconds


@dataclass(frozen=True)
class Counter:
    """The counter of one subject in the current window of one limit."""

    key: str
    resets_at: float  # epoch seconds


def counter(services: Services, *, limit: Limit, subject: str) -> Counter:
    slot = int(clock.now().timestamp() // limit.window)
    key = services.key("rate", limit.name, subject, str(slot))
    return Counter(key=key, resets_at=float((slot + 1) * limit.window))


def enforced(services: Services, limit: Limit) -> bool:
    return limit.limit > 0 and services.settings.rate_limits_enabled


async def hit(services: Services, *, limit: Limit, counter: Counter) -> None:
    """Counts one request against ``limit``; over it → 429 with ``Retry-After``."""
    try:
        count = await services.counts.hit(services.redis, counter.key, limit.window + 1)
    except RedisError as exc:
        # Fail open: without Redis the service stays usable (the card scan reads the database).
        log.warning("rate limit %s not counted: %s", limit.name, exc)
        return
    if int(count) > limit.limit:
        _refuse(limit, counter.resets_at - clock.now().timestamp())


class RedisCounts:
    """The Redis counts of the requests that arrive in one turn of the event loop, sent as one
    command (one round trip, one reply) instead of one command each: ``_HIT_ALL`` by its digest,
    sent whole to a Redis that does not know it yet (new, restarted or flushed), which also loads
    it. A key counted twice in one turn counts twice, each request its own count.
    """

    def __init__(self) -> None:
        self._waiting: list[tuple[str, int, asyncio.Future[int]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def hit(self, redis: Redis, key: str, ttl: int) -> int:
        loop = asyncio.get_running_loop()
        count: asyncio.Future[int] = loop.create_future()
        self._waiting.append((key, ttl, count))
        if self._sending is None:
            self._sending = loop.create_task(self._send(redis))
        return await count

    async def _send(self, redis: Redis) -> None:
        await asyncio.sleep(0)  # the requests of this turn of the loop join in
        batch, self._waiting, self._sending = self._waiting, [], None
        keys = [key for key, _, _ in batch]
        ttls = [ttl for _, ttl, _ in batch]
        try:
            try:
                replies = await redis.evalsha(_HIT_ALL_SHA, len(keys), *keys, *ttls)
            except NoScriptError:
                replies = await redis.eval(_HIT_ALL, len(keys), *keys, *ttls)
        except Exception as exc:
            for *_, count in batch:
                if not count.done():  # its request may be gone (the client hung up)
                    count.set_exception(exc)
            return
        for (*_, count), reply in zip(batch, replies, strict=True):
            if not count.done():
                count.set_result(int(reply))


class LocalWindow:
    """One worker's counts for one limit in the current window, cleared when the window ends."""

    def __init__(self) -> None:
        self._slot = -1
        self._counts: dict[str, int] = {}

    def hit(self, *, limit: Limit, subject: str, now: float) -> None:
        slot = int(now // limit.window)
        if slot != self._slot:
            self._slot = slot
            self._counts.clear()
        count = self._counts.get(subject, 0) + 1
        self._counts[subject] = count
        if count > limit.limit:
            _refuse(limit, float((slot + 1) * limit.window) - now)


def check_local(services: Services, *, limit: Limit, subject: str) -> None:
    if enforced(services, limit):
        services.ip_window.hit(limit=limit, subject=subject, now=clock.now().timestamp())


def _refuse(limit: Limit, seconds_left: float) -> None:
    retry_after = max(1, math.ceil(seconds_left))
    raise TooManyRequests(
        TOO_MANY.format(wait=_wait_text(retry_after)),
        details={"limit": limit.limit, "window_seconds": limit.window},
        headers={"Retry-After": str(retry_after)},
    )


async def refund(services: Services, counter: Counter) -> None:
    """Takes back one count (a request that did not do what the limit is about)."""
    await services.redis.eval(_REFUND, 1, counter.key)


async def check(services: Services, *, limit: Limit, subject: str) -> None:
    if enforced(services, limit):
        await hit(services, limit=limit, counter=counter(services, limit=limit, subject=subject))


def _wait_text(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}秒"
    return f"{math.ceil(seconds / 60)}分钟"


def per_ip(services: Services) -> Limit:
    return Limit("ip", services.settings.rate_ip_per_minute, 60)


def posts_per_caller(services: Services) -> Limit:
    return Limit("post", services.settings.rate_posts_per_minute, 60)


def complaints_per_citizen(services: Services) -> Limit:
    return Limit("complaints", services.settings.rate_complaints_per_hour, 3600)
