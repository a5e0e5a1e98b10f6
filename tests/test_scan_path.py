"""The scan path across workers: each worker's copies of card views and sessions follow changes.

Another web worker runs as a real process beside the test app (same PostgreSQL, same Redis
prefix); a change made through this app must be seen there promptly: through the change channel
at once, and without it within ``card_cache_local_seconds``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from api.fakes.wechat import FakeWeChatServer
from api.models import Officer
from api.services import auth, card_cache, card_lookup
from api.services.card_local import Entry, LocalCards
from api.services.context import Services
from api.settings import ROOT
from tests.conftest import APPID, APPSECRET, REDIS_PREFIX, REDIS_URL, _free_port
from tests.support import citizen_token, make_world, staff, staff_token

SERVE = (
    "import sys; from api.app import create_app; create_app().run(host='127.0.0.1', "
    "port=int(sys.argv[1]), single_process=True, access_log=False, motd=False)"
)


def card_url(code: str) -> str:
    return f"/api/v1/cards/{code}"


@asynccontextmanager
async def other_worker(
    database: str, wechat: FakeWeChatServer, tmp_path: Path, **settings: object
) -> AsyncIterator[httpx.AsyncClient]:
    """A second web worker process of the app; ``settings`` are PINGYI_* values."""
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PINGYI_")},
        "PINGYI_ENVIRONMENT": "test",
        "PINGYI_DATABASE_URL": database,
        "PINGYI_REDIS_URL": REDIS_URL,
        "PINGYI_REDIS_PREFIX": REDIS_PREFIX,
        "PINGYI_CARDS_DIR": str(tmp_path / "cards"),
        "PINGYI_UPLOADS_DIR": str(tmp_path / "uploads"),
        "PINGYI_WECHAT_APPID": APPID,
        "PINGYI_WECHAT_SECRET": APPSECRET,
        "PINGYI_WECHAT_API_BASE": wechat.base_url,
        "PINGYI_RATE_LIMITS_ENABLED": "false",
        **{f"PINGYI_{k.upper()}": str(v) for k, v in settings.items()},
    }
    log_path = tmp_path / f"worker-{port}.log"
    log = log_path.open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, str(port), env=env, cwd=ROOT, stdout=log, stderr=log
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                assert proc.returncode is None, log_path.read_text()
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the other worker did not start"
                await asyncio.sleep(0.1)
            yield http
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()


async def until(check: Callable[[], object], *, within: float) -> float:
    """Seconds until ``await check()`` is true; fails after ``within``."""
    started = time.monotonic()
    while True:
        if await check():  # type: ignore[misc]
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"not seen within {within} s"
        await asyncio.sleep(0.01)


async def served_from_memory(http: httpx.AsyncClient, services: Services, code: str) -> bytes:
    """Scans until the worker answers from its own copy: the Redis entry is gone, an edit made
    behind the services' back is not seen, and the answer stays the one it had."""
    first = await http.get(card_url(code))
    assert first.status_code == 200, first.text
    await asyncio.sleep(0.6)  # the worker confirms the generation, then keeps what it serves
    assert (await http.get(card_url(code))).content == first.content
    await services.redis.delete(services.key("card", code))
    await Officer.filter(cards__code=code).update(name="改过的名字")
    assert (await http.get(card_url(code))).content == first.content
    return first.content


async def test_a_revoked_card_is_410_in_another_worker_at_once(
    client: httpx.AsyncClient,
    services: Services,
    database: str,
    wechat_fake: FakeWeChatServer,
    tmp_path: Path,
) -> None:
    world = await make_world()
    await staff("admin-4301", "4301", "city_admin")
    admin = await staff_token(client, "admin-4301")
    assert (await client.get(card_url(world.card.code))).status_code == 200  # a generation now
    # The other worker would trust its copy for 30 s without news: only the channel can tell it.
    async with other_worker(database, wechat_fake, tmp_path, card_cache_local_seconds=30) as other:
        before = await served_from_memory(other, services, world.card.code)
        res = await client.post(f"/api/v1/admin/cards/{world.card.code}/revoke", headers=admin)
        assert res.status_code == 200, res.text

        async def revoked() -> bool:
            return (await other.get(card_url(world.card.code))).status_code == 410

        await until(revoked, within=2.0)
        res = await other.get(card_url(world.card.code))
        assert res.json()["error"]["code"] == "card_revoked"
        # The other card's copy went too: the edit made behind the back is seen now.
        seen = await other.get(card_url(world.other_card.code))
        assert seen.status_code == 200 and seen.content != before
    # In this worker, before the revoke call even returned.
    assert (await client.get(card_url(world.card.code))).status_code == 410


async def test_without_the_channel_a_copy_is_trusted_a_bounded_time(
    client: httpx.AsyncClient,
    services: Services,
    database: str,
    wechat_fake: FakeWeChatServer,
    tmp_path: Path,
) -> None:
    world = await make_world()
    assert (await client.get(card_url(world.card.code))).status_code == 200  # a generation now
    async with other_worker(database, wechat_fake, tmp_path, card_cache_local_seconds=1) as other:
        await served_from_memory(other, services, world.card.code)
        # A change whose message was lost: a new generation stored, nothing published.
        await services.redis.set(
            card_cache.generation_key(services.settings), card_cache.new_generation()
        )

        async def fresh() -> bool:
            res = await other.get(card_url(world.card.code))
            return bool(res.json()["officer"]["name"] == "改过的名字")

        assert await until(fresh, within=3.0) <= 2.0


async def test_a_revoked_session_ends_in_every_worker(
    client: httpx.AsyncClient,
    services: Services,
    database: str,
    wechat_fake: FakeWeChatServer,
    tmp_path: Path,
) -> None:
    headers = await citizen_token(client)
    token = headers["Authorization"].removeprefix("Bearer ")
    async with other_worker(database, wechat_fake, tmp_path, session_cache_seconds=60) as other:
        assert (await other.get("/api/v1/me", headers=headers)).status_code == 200
        await asyncio.sleep(0.6)  # subscribed and remembering by now
        assert (await other.get("/api/v1/me", headers=headers)).status_code == 200
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
        await auth.revoke(services, token, "citizen")
        # This worker: at once.
        res = await client.get("/api/v1/me", headers=headers)
        assert res.status_code == 401 and res.json()["error"]["code"] == "token_invalid"

        async def ended() -> bool:
            return (await other.get("/api/v1/me", headers=headers)).status_code == 401

        await until(ended, within=2.0)


async def test_a_read_racing_a_change_is_not_kept() -> None:
    local = LocalCards(max_entries=10, trust_seconds=5)
    local.confirm("g1", local.epoch)
    entry = Entry(kind=card_cache.FOUND, body=b"{}", expires_at=time.monotonic() + 60)
    mark = local.mark()  # a read starts under g1 ...
    local.drop()  # ... a change is announced ...
    local.confirm("g2", local.epoch)
    local.put("A", mark, "g1", entry)  # ... the read ends: its answer is not kept
    assert local.get("A") is None
    local.put("B", local.mark(), "g1", entry)  # Redis answered under another generation
    assert local.get("B") is None
    local.put("C", local.mark(), "g2", entry)
    assert local.get("C") is entry
    local.confirm("g3", local.epoch)  # a generation read without a message: all copies go
    assert local.get("C") is None


async def test_copies_are_bounded() -> None:
    local = LocalCards(max_entries=2, trust_seconds=5)
    local.confirm("g", local.epoch)
    entry = Entry(kind=card_cache.UNKNOWN, body=b"", expires_at=time.monotonic() + 60)
    for code in ("A", "B", "C"):
        local.put(code, local.mark(), "g", entry)
    assert len(local) == 2 and local.get("A") is None and local.get("C") is entry


@pytest.mark.parametrize("kind", [card_cache.REVOKED, card_cache.UNKNOWN])
async def test_negative_answers_come_from_memory_too(
    client: httpx.AsyncClient, services: Services, kind: str
) -> None:
    world = await make_world()
    code = world.card.code
    assert (await client.get(card_url(code))).status_code == 200  # a generation now ...
    await asyncio.sleep(0.4)  # ... confirmed by this worker's follower
    entry = Entry(kind=kind, body=b"", expires_at=time.monotonic() + 60)
    services.card_local.put(code, services.card_local.mark(), await _generation(services), entry)
    res = await client.get(card_url(code))
    assert res.status_code == (410 if kind == card_cache.REVOKED else 404)
    await card_lookup.forget_card(services, code)
    assert (await client.get(card_url(code))).status_code == 200


async def _generation(services: Services) -> str:
    value = await services.redis.get(card_cache.generation_key(services.settings))
    assert value is not None
    return str(value)
