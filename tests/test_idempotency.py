"""Exactly-once POSTs (Idempotency-Key), rate limits (429 + Retry-After) and the two-tap login."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sanic import Sanic

from api import clock
from api.app import create_app
from api.fakes.sms import FakeSmsServer
from api.fakes.wechat import FakeWeChatServer
from api.middleware import configure_proxies
from api.models import Case
from api.services.context import Services
from api.settings import Settings
from tests.conftest import TEST_DATABASE_URL, make_settings
from tests.conftest import _free_port as free_port
from tests.support import citizen_token, dev_code, make_world

COMPLAINTS = "/api/v1/complaints"
LOGIN = "/api/v1/auth/wechat"


def complaint(
    card_code: str, description: str = "执法人员态度恶劣，拒绝出示证件。"
) -> dict[str, Any]:
    return {"card_code": card_code, "categories": ["RUDE"], "description": description}


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def error_code(res: httpx.Response) -> str:
    code: str = res.json()["error"]["code"]
    return code


@pytest.fixture(autouse=True)
async def own_prefix(services: Services, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    # Locks and counters under a prefix of this process: another test run sharing this Redis
    # wipes "pingyi-test:*" before each of its tests, which would pull keys from under these.
    prefix = f"pingyi-idem-test-{os.getpid()}:"
    monkeypatch.setattr(services.settings, "redis_prefix", prefix)
    monkeypatch.setattr(services.settings, "rate_limits_enabled", True)
    yield
    keys = [k async for k in services.redis.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await services.redis.delete(*keys)


@pytest.fixture
def frozen_clock() -> None:
    # Fixed windows follow the shared clock: frozen, a test never straddles two windows; and at a
    # random hour of 2001, its windows are not those of another test run sharing this Redis.
    clock.freeze(datetime(2001, 1, 1, tzinfo=UTC) + timedelta(hours=random.randrange(8000)))


async def test_a_retried_complaint_is_filed_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    headers = keyed(await citizen_token(client), "complaint-retry-0001")
    first = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=headers)
    again = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=headers)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["content-type"].startswith("application/json")
    assert again.json() == first.json() and first.json()["ticket_no"]
    assert await Case.all().count() == 1


async def test_concurrent_posts_with_one_key_run_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    headers = keyed(await citizen_token(client), "complaint-burst-0001")
    answers = await asyncio.gather(
        *(
            client.post(COMPLAINTS, json=complaint(world.card.code), headers=headers)
            for _ in range(10)
        )
    )
    statuses = sorted(res.status_code for res in answers)
    assert set(statuses) <= {201, 409}, [res.text for res in answers]
    fresh = [r for r in answers if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1
    for res in answers:
        if res.status_code == 409:
            assert error_code(res) == "idempotency_in_progress"
        elif res is not fresh[0]:
            assert res.json() == fresh[0].json()
    assert await Case.all().count() == 1
    # Once the first has finished, every retry gets its answer.
    late = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=headers)
    assert late.status_code == 201 and late.json() == fresh[0].json()


async def test_the_same_key_with_another_body_is_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    headers = keyed(await citizen_token(client), "complaint-reuse-0001")
    first = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=headers)
    assert first.status_code == 201
    other = complaint(world.card.code, "另一件事：执法人员未出示证件。")
    res = await client.post(COMPLAINTS, json=other, headers=headers)
    assert res.status_code == 422 and error_code(res) == "idempotency_key_reused"
    assert await Case.all().count() == 1


async def test_keys_are_scoped_by_caller(client: httpx.AsyncClient, services: Services) -> None:
    world = await make_world()
    alice = keyed(await citizen_token(client, "alice"), "shared-key-0001")
    bob = keyed(await citizen_token(client, "bob"), "shared-key-0001")
    for headers in (alice, bob):
        res = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=headers)
        assert res.status_code == 201 and "Idempotent-Replayed" not in res.headers
    assert await Case.all().count() == 2


@pytest.mark.parametrize("key", ["short", "x" * 65, "has space-123", "key.with.dots-01", ""])
async def test_an_invalid_key_is_a_400(
    client: httpx.AsyncClient, services: Services, key: str
) -> None:
    res = await client.post(
        LOGIN, json={"code": dev_code("alice")}, headers={"Idempotency-Key": key}
    )
    assert res.status_code == 400 and error_code(res) == "idempotency_key_invalid"
    assert "幂等键" in res.json()["error"]["message"]


async def test_a_failed_attempt_is_not_stored(
    client: httpx.AsyncClient, services: Services, wechat_fake: FakeWeChatServer
) -> None:
    headers = {"Idempotency-Key": "login-after-busy-01"}
    body = {"code": dev_code("alice")}
    wechat_fake.fail_next("/sns/jscode2session", -1)
    busy = await client.post(LOGIN, json=body, headers=headers)
    assert busy.status_code == 503 and busy.headers["Retry-After"]
    retry = await client.post(LOGIN, json=body, headers=headers)
    assert retry.status_code == 200 and "Idempotent-Replayed" not in retry.headers
    replay = await client.post(LOGIN, json=body, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["token"] == retry.json()["token"]


async def test_posts_without_a_key_behave_as_before(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    headers = await citizen_token(client)
    for _ in range(2):
        res = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=headers)
        assert res.status_code == 201 and "Idempotent-Replayed" not in res.headers
    assert await Case.all().count() == 2


# --- rate limits -------------------------------------------------------------------------------


async def test_complaints_per_citizen_are_limited(
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    frozen_clock: None,
) -> None:
    monkeypatch.setattr(services.settings, "rate_complaints_per_hour", 2)
    world = await make_world()
    headers = await citizen_token(client)
    for _ in range(2):
        res = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=headers)
        assert res.status_code == 201, res.text
    limited = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=headers)
    assert limited.status_code == 429 and error_code(limited) == "too_many_requests"
    assert 0 < int(limited.headers["Retry-After"]) <= 3600
    assert "频繁" in limited.json()["error"]["message"]
    assert await Case.all().count() == 2
    # Refused attempts (a typo, the 429 itself) do not use up the quota: only filed complaints.
    monkeypatch.setattr(services.settings, "rate_complaints_per_hour", 3)
    for _ in range(3):
        bad = await client.post(COMPLAINTS, json={"card_code": world.card.code}, headers=headers)
        assert bad.status_code == 422
    res = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=headers)
    assert res.status_code == 201, res.text
    monkeypatch.setattr(services.settings, "rate_complaints_per_hour", 2)
    # Another login of the same citizen is the same citizen: no fresh quota.
    again = await citizen_token(client)
    res = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=again)
    assert res.status_code == 429


async def test_posts_per_caller_are_limited(
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    frozen_clock: None,
) -> None:
    monkeypatch.setattr(services.settings, "rate_posts_per_minute", 3)
    world = await make_world()
    headers = await citizen_token(client)
    body = {"score": 5}
    answers = [
        await client.post(
            f"/api/v1/cards/{world.card.code}/evaluations", json=body, headers=headers
        )
        for _ in range(4)
    ]
    assert answers[-1].status_code == 429, [a.text for a in answers]
    assert 0 < int(answers[-1].headers["Retry-After"]) <= 60
    assert all(a.status_code != 429 for a in answers[:3])


async def test_posts_arriving_together_are_each_counted_also_by_a_new_redis(
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    frozen_clock: None,
) -> None:
    """The counts of one turn of the loop go to Redis in one command; a Redis that lost its
    scripts (restarted, flushed) is sent the script itself, and nothing goes uncounted."""
    monkeypatch.setattr(services.settings, "rate_posts_per_minute", 5)
    world = await make_world()
    headers = await citizen_token(client)
    await services.redis.script_flush()
    path = f"/api/v1/cards/{world.card.code}/evaluations"
    answers = await asyncio.gather(
        *(client.post(path, json={"level": 5}, headers=headers) for _ in range(8))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(429) == 3, [a.text for a in answers]
    assert statuses[:5] == [201, 409, 409, 409, 409], [a.text for a in answers]


async def test_a_rate_limited_attempt_can_be_retried_with_its_key(
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    frozen_clock: None,
) -> None:
    monkeypatch.setattr(services.settings, "rate_complaints_per_hour", 1)
    world = await make_world()
    headers = await citizen_token(client)
    first = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=headers)
    assert first.status_code == 201
    keyed_headers = keyed(headers, "complaint-after-429")
    limited = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=keyed_headers)
    assert limited.status_code == 429
    monkeypatch.setattr(services.settings, "rate_complaints_per_hour", 10)
    res = await client.post(COMPLAINTS, json=complaint(world.card.code), headers=keyed_headers)
    assert res.status_code == 201 and "Idempotent-Replayed" not in res.headers


async def test_x_forwarded_for_does_not_escape_the_ip_limit(
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    frozen_clock: None,
) -> None:
    monkeypatch.setattr(services.settings, "rate_ip_per_minute", 3)
    answers = [
        await client.get(
            "/api/v1/misconduct-categories",
            headers={"X-Forwarded-For": f"203.0.113.{n}", "X-Real-IP": f"198.51.100.{n}"},
        )
        for n in range(5)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert int(answers[3].headers["Retry-After"]) > 0


@pytest.fixture
async def proxied_app(
    services: Services,
    wechat_fake: FakeWeChatServer,
    sms_fake: FakeSmsServer,
    tmp_path: Path,
) -> AsyncIterator[str]:
    """A second app over real HTTP, configured to run behind one trusted proxy (this test's
    client plays the proxy); same database, its own Redis prefix, per-IP limit 3 a minute."""
    prefix = services.settings.redis_prefix + "proxied:"
    settings = make_settings(
        TEST_DATABASE_URL,
        wechat_fake,
        sms_fake,
        tmp_path / "cards",
        uploads_dir=tmp_path / "uploads",
        redis_prefix=prefix,
        rate_limits_enabled=True,
        rate_ip_per_minute=3,
        trusted_proxies=1,
    )
    app = create_app(settings, name=f"pingyi_proxied_{next(_apps)}")
    app.config.TOUCHUP = False  # Sanic rewrites its HTTP code once per process, for the first app
    port = free_port()
    server = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    yield f"http://127.0.0.1:{port}"
    await server.before_stop()
    await server.close()
    # Not after_stop: its listener would close the database the session's app still uses.
    await app.ctx.redis.aclose()


_apps = itertools.count()


async def _statuses(base_url: str, forwarded: list[str | None]) -> list[int]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        answers = []
        for value in forwarded:
            headers = {"X-Forwarded-For": value} if value is not None else {}
            answers.append(await http.get("/api/v1/misconduct-categories", headers=headers))
    for answer in answers:
        if answer.status_code == 429:
            assert int(answer.headers["Retry-After"]) > 0
            assert answer.json()["error"]["code"] == "too_many_requests"
    return [a.status_code for a in answers]


async def test_behind_a_trusted_proxy_x_forwarded_for_decides_the_client_ip(
    proxied_app: str, frozen_clock: None
) -> None:
    one, two = "203.0.113.1", "203.0.113.2"
    # The proxy's X-Forwarded-For names the client: each address has its own three a minute.
    assert await _statuses(proxied_app, [one, one, one, one]) == [200, 200, 200, 429]
    assert await _statuses(proxied_app, [two, two, two, two]) == [200, 200, 200, 429]
    # A client that sends its own X-Forwarded-For gets the proxy's entry appended: the last one
    # counts, so a forged first entry neither escapes the limit nor spends another's budget.
    assert await _statuses(proxied_app, [f"198.51.100.9, {one}"]) == [429]
    assert await _statuses(proxied_app, [f"{one}, 203.0.113.3"]) == [200]
    # Without the header the socket peer (the proxy itself) is the client.
    assert await _statuses(proxied_app, [None, None, None, None]) == [200, 200, 200, 429]


async def test_without_the_setting_x_forwarded_for_is_not_the_client_ip(
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    frozen_clock: None,
) -> None:
    assert services.settings.trusted_proxies == 0  # the session's app: the default
    monkeypatch.setattr(services.settings, "rate_ip_per_minute", 3)
    forwarded = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]
    assert await _statuses(str(client.base_url), forwarded) == [200, 200, 200, 429]


def test_proxy_headers_count_only_behind_declared_proxies() -> None:
    app = Sanic("pingyi_proxy_settings")
    configure_proxies(app, Settings(trusted_proxies=0, real_ip_header="X-Real-IP"))
    assert app.config.PROXIES_COUNT == 0 and not app.config.REAL_IP_HEADER
    configure_proxies(app, Settings(trusted_proxies=1, real_ip_header="X-Real-IP"))
    assert app.config.PROXIES_COUNT == 1 and app.config.REAL_IP_HEADER == "X-Real-IP"


# --- two-tap login -----------------------------------------------------------------------------


async def test_two_taps_on_login_make_one_upstream_call(
    client: httpx.AsyncClient, services: Services, wechat_fake: FakeWeChatServer
) -> None:
    code = dev_code("alice")
    first, second = await asyncio.gather(
        client.post(LOGIN, json={"code": code}), client.post(LOGIN, json={"code": code})
    )
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["token"] == second.json()["token"]
    assert wechat_fake.calls["/sns/jscode2session"] == 1
    # A retry a few seconds later (the answer was lost on the way) gets the same session too.
    third = await client.post(LOGIN, json={"code": code})
    assert third.status_code == 200 and third.json()["token"] == first.json()["token"]
    assert wechat_fake.calls["/sns/jscode2session"] == 1
    me = await client.get(COMPLAINTS, headers={"Authorization": f"Bearer {first.json()['token']}"})
    assert me.status_code == 200


async def test_a_reused_code_after_the_window_is_refused(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
) -> None:
    code = dev_code("alice")
    assert (await client.post(LOGIN, json={"code": code})).status_code == 200
    await services.redis.delete(
        *[k async for k in services.redis.scan_iter(match=services.key("login-code", "*"))]
    )
    res = await client.post(LOGIN, json={"code": code})
    assert res.status_code == 401 and res.json()["error"]["details"]["errcode"] == 40163
    assert "已被使用" in res.json()["error"]["message"]


async def test_a_replayed_code_does_not_hand_out_an_ended_session(
    client: httpx.AsyncClient, services: Services, wechat_fake: FakeWeChatServer
) -> None:
    """Logged out, or refreshed: the code's replay window no longer gives the old token (a dead
    one, or one about to end, told as good for a week); the code is used up."""
    code = dev_code("bob")
    first = (await client.post(LOGIN, json={"code": code})).json()
    headers = {"Authorization": f"Bearer {first['token']}"}
    refreshed = await client.post("/api/v1/auth/refresh", headers=headers)
    assert refreshed.status_code == 200, refreshed.text
    again = await client.post(LOGIN, json={"code": code})
    assert again.status_code == 200 and again.json()["token"] == first["token"]
    assert again.json()["expires_in"] <= services.settings.citizen_refresh_grace_seconds
    logout = {"Authorization": f"Bearer {refreshed.json()['token']}"}
    assert (await client.post("/api/v1/auth/logout", headers=logout)).status_code == 200
    res = await client.post(LOGIN, json={"code": code})
    assert res.status_code == 401 and res.json()["error"]["details"]["errcode"] == 40163
    assert wechat_fake.calls["/sns/jscode2session"] == 1


async def test_a_made_up_token_does_not_escape_the_sign_in_limit(
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    frozen_clock: None,
) -> None:
    monkeypatch.setattr(services.settings, "rate_posts_per_minute", 2)
    answers = [
        await client.post(
            LOGIN, json={"code": dev_code(f"m{i}")}, headers={"Authorization": f"Bearer x{i}"}
        )
        for i in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 429], [a.text for a in answers]


async def test_a_401_is_not_kept_for_its_key(client: httpx.AsyncClient, services: Services) -> None:
    world = await make_world()
    path = f"/api/v1/cards/{world.card.code}/evaluations"
    headers = keyed({"Authorization": "Bearer not-a-session"}, "rate-with-a-dead-token")
    for _ in range(2):
        res = await client.post(path, json={"level": 5}, headers=headers)
        assert res.status_code == 401 and "Idempotent-Replayed" not in res.headers, res.text
