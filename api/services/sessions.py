"""Citizen sessions after sign-in: refresh before expiry, logout, and the family of a sign-in.

A refresh hands out a new token with a new expiry; the old token is not killed at once but kept
for ``citizen_refresh_grace_seconds`` (60): requests already on their way with it still work, and
a refresh retried because its answer was lost on a weak network gets the *same* new token again
(the answer is kept in Redis for the grace, like the two-tap login), never a logout. After the
grace the old token is dead. The tokens of one sign-in form a family (``AuthSession.family_id``):
logout ends the whole family, and ``Idempotency-Key``s are scoped by it, so a submission retried
across a refresh is still recognised.
"""

from __future__ import annotations

import json
from datetime import timedelta

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from api import clock
from api.errors import Unauthorized
from api.models import AuthSession
from api.services import auth, broadcast
from api.services.auth import IssuedToken, token_hash
from api.services.context import Services

_LOCK_SECONDS = 10


async def refresh_citizen(services: Services, token: str) -> IssuedToken:
    """A valid, unexpired citizen token → a new token (401 ``token_invalid`` otherwise)."""
    await auth.session_for(token, "citizen")  # 401 before any Redis work
    key = services.key("refresh", token_hash(token)[:40])
    lock = await services.redis.set(f"{key}:lock", "1", nx=True, ex=_LOCK_SECONDS)
    if not lock:
        await auth.wait_for_first(services, key)
    try:
        replayed = await _replayed(services, key)
        if replayed is not None:
            return replayed
        issued = await _rotate(services, token)
        await services.redis.set(
            key,
            json.dumps(
                {"token": issued.token, "expires_at": clock.now().timestamp() + issued.expires_in}
            ),
            ex=max(1, services.settings.citizen_refresh_grace_seconds),
        )
        return issued
    finally:
        if lock:
            await services.redis.delete(f"{key}:lock")


async def _replayed(services: Services, key: str) -> IssuedToken | None:
    """The answer of the first refresh of this token, while its new token is still good."""
    cached = await auth.cached_token(services, key)
    if cached is None:
        return None
    try:
        await auth.session_for(cached.token, "citizen")
    except Unauthorized:
        return None  # logged out since: the old token decides (dead too, by then)
    return cached


async def _rotate(services: Services, token: str) -> IssuedToken:
    now = clock.now()
    grace_end = now + timedelta(seconds=max(0, services.settings.citizen_refresh_grace_seconds))
    async with in_transaction() as conn:
        old = (
            await AuthSession.filter(token_hash=token_hash(token), kind="citizen")
            .select_for_update()
            .using_db(conn)
            .first()
        )
        if old is None or old.revoked_at is not None or old.expires_at <= now:
            raise Unauthorized("登录已失效，请重新登录", code="token_invalid")
        issued = await auth.issue_citizen_token(services, old, conn)
        if old.expires_at > grace_end:
            await AuthSession.filter(id=old.id).using_db(conn).update(expires_at=grace_end)
    await _forget(services, [old.token_hash])  # remembered with its old expiry
    return issued


async def logout_citizen(services: Services, token: str) -> None:
    """Ends this sign-in now: this token and every token refreshed from or into it, in every
    worker's remembered sessions too (``session_cache``)."""
    session = await auth.session_for(token, "citizen")
    family = session.family_id or session.id
    live = AuthSession.filter(
        Q(id=family) | Q(family_id=family), kind="citizen", revoked_at__isnull=True
    )
    hashes = [str(h) for h in await live.values_list("token_hash", flat=True)]
    await live.update(revoked_at=clock.now())
    await _forget(services, hashes)


async def _forget(services: Services, hashes: list[str]) -> None:
    for digest in hashes:
        services.sessions.forget(digest)
        await broadcast.publish_revoked(services, digest)


async def idempotency_scope(token: str) -> str | None:
    """The sign-in a citizen token belongs to (``s-<family>``), None for any other token."""
    try:
        session = await auth.session_for(token, "citizen")
    except Unauthorized:
        return None
    return f"s-{session.family_id or session.id}"
