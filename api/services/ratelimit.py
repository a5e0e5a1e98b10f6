"""Fixed-window request counters in Redis: per client IP, per caller, per citizen for complaints.

One round trip per counter (INCR + EXPIRE in a pipeline). A window is a slot of the shared clock;
the key expires with it, so Redis holds no more than one live counter per limit and caller.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from redis.exceptions import RedisError

from api import clock
from api.errors import TooManyRequests
from api.services.context import Services

log = logging.getLogger("pingyi.ratelimit")
TOO_MANY = "操作过于频繁，请{wait}后再试"
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
        async with services.redis.pipeline(transaction=False) as pipe:
            pipe.incr(counter.key)
            pipe.expire(counter.key, limit.window + 1)
            count, _ = await pipe.execute()
    except RedisError as exc:
        # Fail open: without Redis the service stays usable (the card scan reads the database).
        log.warning("rate limit %s not counted: %s", limit.name, exc)
        return
    if int(count) > limit.limit:
        retry_after = max(1, math.ceil(counter.resets_at - clock.now().timestamp()))
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
