"""What one web worker changes, the others hear: the Redis channels each web worker follows.

Two channels, both under the Redis prefix:

* ``card-changes``: a new card-view generation (``card_cache.invalidate``): drop the copies of
  card views (``card_local``);
* ``session-revoked``: a revoked session's token hash (``auth.revoke``): forget that session
  (``session_cache``).

Pub/sub delivers at most once, so the channel is only the fast way: the follower also reads the
card generation every quarter of ``card_cache_local_seconds``, and while it is not subscribed
(Redis down, connection lost) the worker trusts neither copies nor remembered sessions. Started
by the app's listeners, one per web worker; the background worker process does not follow.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from api.redis import open_redis
from api.services import card_cache
from api.services.context import Services
from api.settings import Settings

log = logging.getLogger("pingyi.broadcast")


def session_channel(settings: Settings) -> str:
    return f"{settings.redis_prefix}session-revoked"


async def publish_revoked(services: Services, digest: str) -> None:
    try:
        await services.redis.publish(session_channel(services.settings), digest)
    except RedisError as exc:
        # The session is revoked in the database; other workers forget it within the bound.
        log.error("session revocation not published: %s", exc)


async def follow(services: Services) -> None:
    """Runs for the life of a web worker (cancelled on shutdown)."""
    redis = open_redis(services.settings.redis_url)
    interval = max(services.card_local.trust_seconds / 4, 0.05)
    backoff = interval
    try:
        while True:
            try:
                async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(
                        card_cache.changes_channel(services.settings),
                        session_channel(services.settings),
                    )
                    services.sessions.following = True
                    backoff = interval
                    await _listen(services, redis, pubsub, interval)
            except (RedisError, OSError) as exc:
                log.warning("change channels lost, reading Redis and the database: %s", exc)
            _stop_trusting(services)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
    finally:
        _stop_trusting(services)
        await redis.aclose()


def _stop_trusting(services: Services) -> None:
    services.sessions.following = False
    services.sessions.clear()
    services.card_local.drop()


async def _listen(services: Services, redis: Redis, pubsub: PubSub, interval: float) -> None:
    local = services.card_local
    generation_key = card_cache.generation_key(services.settings)
    cards = card_cache.changes_channel(services.settings)
    while True:
        epoch = local.epoch
        generation = await redis.get(generation_key)
        local.confirm(None if generation is None else str(generation), epoch)
        message = await pubsub.get_message(timeout=interval)
        while message is not None:  # several at once: one read of the generation after them
            if message.get("type") == "message":
                if message["channel"] == cards:
                    local.drop()
                else:
                    services.sessions.forget(str(message["data"]))
            message = await pubsub.get_message(timeout=0)
