"""The Redis cache of the public card view (``GET /api/v1/cards/{code}``), shared by all workers.

Scanning a card is the hottest path of the product, so its answer is cached in Redis as the
serialised response: the profile of an active card, or the fact that a code is revoked or
unknown (the negative answer protects the database from scans of random codes).

Invalidation is by generation. Every entry carries the generation that was current when its
reader *started*; a change that affects any card view (a card issued or revoked, an officer or a
unit changed) stores a fresh generation after its transaction commits, and an entry of another
generation counts as a miss. This covers what per-key deletes cannot:

* a reader that loaded the old row just before the commit and writes it back just after the
  delete would otherwise re-cache the stale answer for a whole TTL;
* a unit's hotline or name appears on every card of its own officers and, under "上级监督", on
  the cards of every unit it supervises (its children, or units naming it in config);
* a code cached as unknown must not hide a card issued with that code a moment later.

Changes are admin actions, rare next to scans; one change re-reads each card once. Generations
are random tokens, never a counter, so an entry can never come back to life after Redis lost the
generation key. Redis is an accelerator only: when it fails, the view is read from the database.
The TTLs are a safety net against an invalidation lost while Redis was unreachable.

Each new generation is also published on ``{prefix}card-changes``: every worker keeps its own
copy of the answers it served (``card_local``) and drops it when told.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.services.context import Services
from api.settings import Settings

log = logging.getLogger("pingyi.card_cache")

FOUND, REVOKED, UNKNOWN = "ok", "revoked", "unknown"
TTL_SECONDS = {FOUND: 300, REVOKED: 300, UNKNOWN: 60}
_SEP = "\n"


@dataclass(frozen=True)
class Lookup:
    """What the cache holds for one code: its generation and, on a hit, the cached answer."""

    generation: str | None  # None: Redis unreachable, or the generation was just reset
    kind: str | None = None  # FOUND | REVOKED | UNKNOWN on a hit
    body: str = ""  # the JSON body of a FOUND answer
    unavailable: bool = False  # Redis could not be read


def entry_key(services: Services, code: str) -> str:
    return _entry_key(services.settings, code)


def _entry_key(settings: Settings, code: str) -> str:
    return f"{settings.redis_prefix}card:{code}"  # the same as services.key("card", code)


def generation_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}card-generation"


def changes_channel(settings: Settings) -> str:
    return f"{settings.redis_prefix}card-changes"


def new_generation() -> str:
    return secrets.token_hex(8)


async def read(services: Services, code: str) -> Lookup:
    """One round trip: the current generation and the code's entry."""
    gen_key = generation_key(services.settings)
    try:
        values = await services.redis.mget(gen_key, entry_key(services, code))
        generation, raw = cast("list[str | None]", values)  # decode_responses=True
        if generation is None:  # first use, or Redis was flushed: start a generation
            fresh = new_generation()
            started = await services.redis.set(gen_key, fresh, nx=True)
            return Lookup(fresh if started else None)
    except RedisError as exc:
        log.warning("card cache unavailable, reading the database: %s", exc)
        return Lookup(None, unavailable=True)
    if raw is not None:
        entry_gen, kind, body = raw.split(_SEP, 2)
        if entry_gen == generation:
            return Lookup(generation, kind, body)
    return Lookup(generation)


async def write(services: Services, code: str, lookup: Lookup, *, kind: str, body: str) -> None:
    """Caches an answer read from the database under the generation seen before reading it."""
    if lookup.generation is None:
        return
    value = _SEP.join((lookup.generation, kind, body))
    try:
        await services.redis.set(entry_key(services, code), value, ex=TTL_SECONDS[kind])
    except RedisError as exc:
        log.warning("card cache not written: %s", exc)


async def invalidate(services: Services, *codes: str) -> None:
    """After a committed change to cards, officers or units: every cached card view is stale.

    ``codes`` (the cards known to be touched) are also deleted, which frees their memory now.
    This worker's copies go before the call returns; the other workers' when the news arrives.
    """
    try:
        await invalidate_with(services.redis, services.settings, *codes)
    finally:
        services.card_local.drop()


async def invalidate_with(redis: Redis, settings: Settings, *codes: str) -> None:
    generation = new_generation()
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(generation_key(settings), generation)
            pipe.publish(changes_channel(settings), generation)
            if codes:
                pipe.delete(*(_entry_key(settings, c) for c in codes))
            await pipe.execute()
    except RedisError as exc:
        # The change is committed; cached views expire within TTL_SECONDS at the latest.
        stale_for = max(TTL_SECONDS.values())
        log.error("card cache not invalidated (stale for up to %s s): %s", stale_for, exc)


async def invalidate_from_settings(settings: Settings) -> None:
    """For processes without a running app (the seed): a short-lived client, failures logged."""
    from api.redis import open_redis

    redis = open_redis(settings.redis_url)
    try:
        await invalidate_with(redis, settings)
    finally:
        await redis.aclose()
