"""The cached card view: the same answer as the database, and never stale after a change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from redis.asyncio import Redis

from api.models import Card, Officer
from api.services import card_cache
from api.services.cards import new_card_code
from api.services.context import Services
from tests.conftest import REDIS_PREFIX
from tests.support import make_world, staff, staff_token

ADMIN = "/api/v1/admin"


def card_url(code: str) -> str:
    return f"/api/v1/cards/{code}"


async def flush_cache(redis: Redis) -> None:
    keys = [k async for k in redis.scan_iter(match=f"{REDIS_PREFIX}card*", count=1000)]
    if keys:
        await redis.delete(*keys)


@asynccontextmanager
async def redis_down(services: Services) -> AsyncIterator[None]:
    """The app's Redis client pointed at a port where nothing listens (a real refused connection)."""
    live = services.redis
    services.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        yield
    finally:
        await services.redis.aclose()
        services.redis = live


async def test_a_hit_answers_what_the_database_answers(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    first = await client.get(card_url(world.card.code))  # a miss: read from the database
    assert first.status_code == 200 and first.headers["content-type"] == "application/json"
    assert await services.redis.exists(services.key("card", world.card.code))
    second = await client.get(card_url(world.card.code.lower()))  # a hit, also for a typed code
    assert second.content == first.content
    assert second.json()["officer"] == {"name": "张执法", "cert_no": "43010299001", "active": True}
    # A hit really comes from Redis: an edit made behind the services' back is not seen ...
    await Officer.filter(id=world.officer.id).update(name="张改名")
    assert (await client.get(card_url(world.card.code))).content == first.content
    # ... until a change is announced; then the database answer, byte for byte as on a miss.
    await card_cache.invalidate(services)
    fresh = await client.get(card_url(world.card.code))
    assert fresh.json()["officer"]["name"] == "张改名"
    assert (await client.get(card_url(world.card.code))).content == fresh.content


async def test_revoke_is_410_on_the_next_scan(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    await staff("admin-4301", "4301", "city_admin")
    admin = await staff_token(client, "admin-4301")
    assert (await client.get(card_url(world.card.code))).status_code == 200  # cached now
    res = await client.post(f"{ADMIN}/cards/{world.card.code}/revoke", headers=admin)
    assert res.status_code == 200, res.text
    res = await client.get(card_url(world.card.code))
    assert res.status_code == 410 and res.json()["error"]["code"] == "card_revoked"
    assert (await client.get(card_url(world.card.code))).status_code == 410  # cached as revoked
    # Outside the admin's subtree (株洲) a card looks like one that does not exist.
    outside = await Card.create(
        code=new_card_code(),
        officer=await Officer.create(unit_id=world.other_officer.unit_id, name="x", cert_no="1"),
    )
    await staff("admin-4302", "4302", "city_admin")
    other_admin = await staff_token(client, "admin-4302")
    res = await client.post(f"{ADMIN}/cards/{outside.code}/revoke", headers=other_admin)
    assert res.status_code == 404


async def test_reissue_revokes_the_old_card_and_the_new_one_scans_at_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    province = await staff_token(client, "province")
    assert (await client.get(card_url(world.card.code))).status_code == 200
    res = await client.post(f"{ADMIN}/officers/{world.officer.cert_no}/cards", headers=province)
    assert res.status_code == 201, res.text
    new = res.json()
    assert new["revoked"] == [world.card.code] and new["url"].endswith(new["code"])
    assert (await client.get(card_url(world.card.code))).status_code == 410
    res = await client.get(card_url(new["code"]))
    assert res.status_code == 200 and res.json()["officer"]["cert_no"] == world.officer.cert_no
    res = await client.post(f"{ADMIN}/officers/0000/cards", headers=province)
    assert res.status_code == 404 and res.json()["error"]["code"] == "officer_not_found"


async def test_unit_hotline_change_is_seen_at_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    province = await staff_token(client, "province")
    before = (await client.get(card_url(world.card.code))).json()
    assert before["channels"][1]["value"] == "12328"
    res = await client.put(
        f"{ADMIN}/units/430102", json={"hotline": "0731-84000000"}, headers=province
    )
    assert res.status_code == 200
    channels = (await client.get(card_url(world.card.code))).json()["channels"]
    assert channels[1]["value"] == "0731-84000000"
    # The city above supervises the county: its hotline shows on the county officer's card too.
    res = await client.put(
        f"{ADMIN}/units/4301", json={"hotline": "0731-82345678"}, headers=province
    )
    assert res.status_code == 200
    channels = (await client.get(card_url(world.card.code))).json()["channels"]
    assert (
        channels[2]["name"].startswith("上级监督：长沙") and channels[2]["value"] == "0731-82345678"
    )


async def test_a_cached_unknown_code_does_not_hide_a_card_issued_with_it(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    code = new_card_code()
    res = await client.get(card_url(code))
    assert res.status_code == 404 and res.json()["error"]["code"] == "card_not_found"
    assert (await client.get(card_url(code))).status_code == 404  # the negative answer, cached
    entry = await services.redis.get(services.key("card", code))
    assert entry is not None and entry.split("\n")[1] == card_cache.UNKNOWN
    assert 0 < await services.redis.ttl(services.key("card", code)) <= 60
    # Issuing a card announces the change after its commit, as every issuing path does.
    await Card.create(code=code, officer=world.officer)
    await card_cache.invalidate(services)
    assert (await client.get(card_url(code))).status_code == 200


async def test_a_reader_racing_a_change_cannot_cache_the_old_answer(services: Services) -> None:
    world = await make_world()
    code = world.card.code
    seen = await card_cache.read(services, code)  # a reader misses, then reads the old row ...
    assert seen.kind is None
    seen = await card_cache.read(services, code)
    assert seen.generation is not None
    await Card.filter(id=world.card.id).update(revoked_at=world.card.created_at)
    await card_cache.invalidate(services, code)  # ... the change commits and is announced ...
    await card_cache.write(services, code, seen, kind=card_cache.FOUND, body="{}")  # ... late
    assert (await card_cache.read(services, code)).kind is None  # the late entry counts for nothing


async def test_without_redis_the_database_answers(
    client: httpx.AsyncClient, services: Services, redis: Redis
) -> None:
    world = await make_world()
    cached = (await client.get(card_url(world.card.code))).content
    async with redis_down(services):
        res = await client.get(card_url(world.card.code))
        assert res.status_code == 200 and res.content == cached
        assert (await client.get(card_url(new_card_code()))).status_code == 404
        await Card.filter(id=world.other_card.id).update(revoked_at=world.card.created_at)
        assert (await client.get(card_url(world.other_card.code))).status_code == 410
    # Redis flushed (generation and entries gone): still the database's answer, then cached again.
    await flush_cache(redis)
    assert (await client.get(card_url(world.card.code))).content == cached
    assert (await client.get(card_url(world.card.code))).content == cached
    assert (await client.get(card_url(world.card.code))).content == cached
    assert await redis.exists(services.key("card", world.card.code))
    assert (await client.get(card_url(world.other_card.code))).status_code == 410
