"""Citizen sessions: refresh before expiry (with a grace for the old token), logout, and the
sign-in that Idempotency-Keys belong to — over real HTTP, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx

from api import clock
from api.fakes.wechat import FakeWeChatServer
from api.models import AuthSession, Case, Citizen
from api.services.auth import token_hash
from api.services.context import Services
from tests.support import at, citizen_token, make_world, staff_token

REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
MINE = "/api/v1/complaints"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def refreshed(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    res = await client.post(REFRESH, headers=headers)
    assert res.status_code == 200, res.text
    return str(res.json()["token"])


async def status_with(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get(MINE, headers=bearer(token))).status_code


def assert_invalid(res: httpx.Response, code: str = "token_invalid") -> None:
    assert res.status_code == 401, res.text
    assert res.json()["error"]["code"] == code and res.json()["error"]["message"]


async def test_refresh_gives_a_new_token_and_the_old_one_a_short_grace(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    old = await citizen_token(client, "alice")
    ttl, grace = (
        services.settings.citizen_token_ttl,
        services.settings.citizen_refresh_grace_seconds,
    )
    clock.advance(timedelta(days=6))  # a day before it would expire
    res = await client.post(REFRESH, headers=old)
    assert res.status_code == 200, res.text
    new = res.json()["token"]
    assert new != token_of(old) and res.json()["expires_in"] == ttl
    row = await AuthSession.get(token_hash=token_hash(new))
    assert row.expires_at == at("2025-03-09 10:00") + timedelta(seconds=ttl)
    assert (await AuthSession.get(token_hash=token_hash(token_of(old)))).family_id is None
    assert row.family_id == (await AuthSession.get(token_hash=token_hash(token_of(old)))).id
    # Requests already on their way with the old token still work for the grace ...
    clock.advance(timedelta(seconds=grace - 1))
    assert await status_with(client, token_of(old)) == 200
    # ... then it is dead, and the new one lives on past the old one's expiry.
    clock.advance(timedelta(seconds=2))
    assert_invalid(await client.get(MINE, headers=old))
    assert_invalid(await client.post(REFRESH, headers=old))
    clock.advance(timedelta(days=6, hours=23))
    assert await status_with(client, new) == 200
    clock.advance(timedelta(hours=2))
    assert await status_with(client, new) == 401  # refreshing is needed before the end


async def test_a_retried_refresh_gets_the_same_new_token(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The answer of a refresh was lost on a weak network: the retry must not log anyone out."""
    old = await citizen_token(client, "alice")
    first, second = await asyncio.gather(
        client.post(REFRESH, headers=old), client.post(REFRESH, headers=old)
    )
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["token"] == second.json()["token"]
    again = await refreshed(client, old)
    assert again == first.json()["token"]
    assert await AuthSession.filter(kind="citizen").count() == 2  # the login and one refresh
    assert await status_with(client, again) == 200
    # The new token refreshes in turn (a chain), each step in the same sign-in.
    newer = await refreshed(client, bearer(again))
    assert newer != again and await status_with(client, newer) == 200
    families = {s.family_id for s in await AuthSession.filter(family_id__isnull=False)}
    assert len(families) == 1


async def test_refresh_refuses_what_is_not_a_live_citizen_token(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    await make_world()
    expired = await citizen_token(client, "alice")
    clock.advance(timedelta(seconds=services.settings.citizen_token_ttl))
    assert_invalid(await client.post(REFRESH, headers=expired))
    staff = await staff_token(client, "county-430102")
    assert_invalid(await client.post(REFRESH, headers=staff))
    assert_invalid(await client.post(REFRESH), code="token_missing")
    assert_invalid(await client.post(REFRESH, headers=bearer("garbage" * 30)))
    assert_invalid(await client.post(LOGOUT, headers=staff))  # a citizen's door only
    assert await AuthSession.filter(kind="citizen", family_id__isnull=False).count() == 0


async def test_logout_ends_the_whole_sign_in_and_nothing_else(
    client: httpx.AsyncClient, services: Services
) -> None:
    old = await citizen_token(client, "alice")
    new = await refreshed(client, old)  # the old token is still in its grace
    other_device = await citizen_token(client, "alice")  # the same citizen, another sign-in
    res = await client.post(LOGOUT, headers=bearer(new))
    assert res.status_code == 200 and res.json() == {"ok": True}, res.text
    assert await status_with(client, new) == 401
    assert await status_with(client, token_of(old)) == 401  # its grace ends with the logout
    assert_invalid(await client.post(REFRESH, headers=old))  # and no retried refresh revives it
    assert_invalid(await client.post(LOGOUT, headers=bearer(new)))
    assert (await client.get(MINE, headers=other_device)).status_code == 200


async def test_an_idempotency_key_outlives_a_refresh(
    client: httpx.AsyncClient, services: Services
) -> None:
    """A complaint whose answer was lost is retried after the token was refreshed: one case."""
    world = await make_world()
    old = await citizen_token(client, "alice")
    body = {"card_code": world.card.code, "categories": ["RUDE"], "description": "态度恶劣。"}
    key = {"Idempotency-Key": "complaint-0001-retry"}
    first = await client.post(MINE, json=body, headers={**old, **key})
    assert first.status_code == 201, first.text
    new = await refreshed(client, old)
    retry = await client.post(MINE, json=body, headers={**bearer(new), **key})
    assert retry.status_code == 201 and retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json()["ticket_no"] == first.json()["ticket_no"]
    assert await Case.all().count() == 1
    # Another sign-in is another scope: the same key there is a new submission.
    other = await citizen_token(client, "bob")
    res = await client.post(MINE, json=body, headers={**other, **key})
    assert res.status_code == 201 and "Idempotent-Replayed" not in res.headers
    assert await Case.all().count() == 2


async def test_a_refreshed_session_keeps_the_wechat_session_key(
    client: httpx.AsyncClient, services: Services, wechat_fake: FakeWeChatServer
) -> None:
    """encryptedData from getPhoneNumber still decrypts after a refresh (same wx.login)."""
    old = await citizen_token(client, "alice")
    new = await refreshed(client, old)
    encrypted, iv = wechat_fake.encrypted_phone("alice", "13812348000")
    res = await client.post(
        "/api/v1/me/phone", json={"encrypted_data": encrypted, "iv": iv}, headers=bearer(new)
    )
    assert res.status_code == 200, res.text
    assert res.json()["phone"] == "138****8000"
    assert (await Citizen.get(openid=wechat_fake.openid_for("alice"))).phone == "13812348000"
