"""Sign-in for citizens (WeChat login code) and staff (password), and bearer-token sessions."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from api import clock, db
from api.db import column
from api.errors import Unauthorized, UpstreamUnavailable
from api.integrations.wechat import WeChatError, WeChatSession
from api.models import AuthSession, Citizen, SecurityEvent, StaffUser
from api.services import broadcast
from api.services.context import Services
from api.services.passwords import dummy_verify, verify_password
from api.services.session_cache import CitizenIdentity, UnreadSession

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient

# WeChat jscode2session errors (TEST-VECTORS.md): a bad or reused code is the user's to retry;
# -1 (busy) and 45011 (too frequent) are WeChat's, so the client should come back later.
_CODE_ERRORS = {
    40029: "登录凭证无效，请重新进入小程序",
    40163: "登录凭证已被使用，请重新进入小程序",
}
_BUSY_ERRORS = {-1, 45011}
LOCK_AFTER_FAILURES = 5
LOCK_MINUTES = 15


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int


def token_hash(token: str) -> str:
    # A header's bytes that are not UTF-8 arrive as surrogates: hashed as the bytes they were.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


async def _issue(
    *,
    kind: str,
    ttl: int,
    citizen_id: int | None = None,
    staff_id: int | None = None,
    session_key: str | None = None,
    family_id: int | None = None,
    conn: BaseDBAsyncClient | None = None,
) -> IssuedToken:
    token = secrets.token_urlsafe(32)
    await AuthSession.create(
        token_hash=token_hash(token),
        kind=kind,
        citizen_id=citizen_id,
        staff_id=staff_id,
        wechat_session_key=session_key,
        family_id=family_id,
        expires_at=clock.now() + timedelta(seconds=ttl),
        using_db=conn,
    )
    return IssuedToken(token=token, expires_in=ttl)


async def issue_citizen_token(
    services: Services, session: AuthSession, conn: BaseDBAsyncClient
) -> IssuedToken:
    """A new token of ``session``'s family (a refresh): same citizen, same WeChat session_key."""
    return await _issue(
        kind="citizen",
        ttl=services.settings.citizen_token_ttl,
        citizen_id=session.citizen_id,
        session_key=session.wechat_session_key,
        family_id=session.family_id or session.id,
        conn=conn,
    )


async def wechat_session(services: Services, code: str) -> WeChatSession:
    """jscode2session through the real client, its errors turned into ours."""
    try:
        return await services.wechat.code_to_session(code)
    except WeChatError as exc:
        if exc.errcode in _BUSY_ERRORS:
            raise UpstreamUnavailable(
                "微信服务繁忙，请稍后重试", code="wechat_busy", headers={"Retry-After": "5"}
            ) from exc
        message = _CODE_ERRORS.get(exc.errcode, "微信登录失败，请重新进入小程序")
        raise Unauthorized(
            message, code="wechat_code_invalid", details={"errcode": exc.errcode}
        ) from exc


# --- two-tap login: the same wx.login code twice within seconds → one upstream call, one token ---
LOGIN_LOCK_SECONDS = 10  # longer than the WeChat timeout: the first caller's login in flight
LOGIN_WAIT_SECONDS = 5.0  # how long a second tap waits for the first before trying itself


async def login_citizen(services: Services, code: str) -> IssuedToken:
    """A code reused within ``login_code_replay_seconds`` gets the token its first use got."""
    if services.settings.login_code_replay_seconds <= 0:
        return await _login_upstream(services, code)
    key = services.key("login-code", hashlib.sha256(code.encode()).hexdigest()[:40])
    lock = await services.redis.set(f"{key}:lock", "1", nx=True, ex=LOGIN_LOCK_SECONDS)
    if not lock:
        cached = await wait_for_first(services, key)
        if cached is not None:
            return cached
    cached = await cached_token(services, key)
    if cached is not None:
        return cached
    try:
        issued = await _login_upstream(services, code)
        await services.redis.set(
            key,
            json.dumps({"token": issued.token}),
            ex=services.settings.login_code_replay_seconds,
        )
        return issued
    finally:
        if lock:
            await services.redis.delete(f"{key}:lock")


async def cached_token(services: Services, key: str) -> IssuedToken | None:
    """The token the code's first use got, told with its session's own expiry. A session ended
    since (logout, or refreshed and past its grace) is not handed out again: the code is then
    used up, as WeChat itself would answer (40163)."""
    raw = await services.redis.get(key)
    if raw is None:
        return None
    token = str(json.loads(raw)["token"])
    session = await AuthSession.get_or_none(token_hash=token_hash(token), kind="citizen")
    now = clock.now()
    if session is None or session.revoked_at is not None or session.expires_at <= now:
        raise Unauthorized(
            _CODE_ERRORS[40163], code="wechat_code_invalid", details={"errcode": 40163}
        )
    expires_in = max(0, int((session.expires_at - now).total_seconds()))
    return IssuedToken(token=token, expires_in=expires_in)


async def wait_for_first(services: Services, key: str) -> IssuedToken | None:
    """Polls briefly while the first tap's login runs; None when it failed or took too long."""
    deadline = asyncio.get_running_loop().time() + LOGIN_WAIT_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        cached = await cached_token(services, key)
        if cached is not None or not await services.redis.exists(f"{key}:lock"):
            return cached
        await asyncio.sleep(0.05)
    return None


# --- end two-tap login ---


async def _login_upstream(services: Services, code: str) -> IssuedToken:
    session = await wechat_session(services, code)
    citizen, _ = await Citizen.get_or_create(
        openid=session.openid, defaults={"unionid": session.unionid}
    )
    # The session_key stays on the server (it decrypts the citizen's encryptedData).
    return await _issue(
        kind="citizen",
        ttl=services.settings.citizen_token_ttl,
        citizen_id=citizen.id,
        session_key=session.session_key,
    )


async def issue_staff_token(services: Services, user: StaffUser) -> IssuedToken:
    return await _issue(kind="staff", ttl=services.settings.staff_token_ttl, staff_id=user.id)


async def login_staff(services: Services, username: str, password: str) -> IssuedToken:
    user = await StaffUser.get_or_none(username=username)
    now = clock.now()
    if user is not None and user.locked_until is not None and user.locked_until > now:
        raise Unauthorized(
            "登录失败次数过多，账号已临时锁定，请15分钟后再试", code="account_locked"
        )
    # argon2 takes tens of milliseconds: off the event loop, and as long for unknown users.
    if user is None:
        await asyncio.to_thread(dummy_verify, password)
        await _unknown_user_failure(services, username)
        raise Unauthorized("用户名或密码错误", code="invalid_credentials")
    if not (
        user.is_active and await asyncio.to_thread(verify_password, user.password_hash, password)
    ):
        await record_failed_login(user)
        raise Unauthorized("用户名或密码错误", code="invalid_credentials")
    if user.failed_logins:
        await StaffUser.filter(id=user.id).update(failed_logins=0)
    return await issue_staff_token(services, user)


async def record_failed_login(user: StaffUser) -> bool:
    """Counts one failure; the fifth locks the account for 15 minutes, and the lock is recorded.

    The count is kept by the database, not in this process: the increment is one ``UPDATE``
    whose row lock lasts until commit, so parallel failures queue on the row and each reads the
    count its own increment made — exactly one of them reaches five. A failure that arrives
    while the account is locked (it passed the lock check before the lock was set) is not
    counted, so a burst locks the account once. True when this failure locked it.
    """
    now = clock.now()
    unlocked = Q(locked_until__isnull=True) | Q(locked_until__lte=now)
    async with in_transaction() as conn:
        counted = (
            await StaffUser.filter(unlocked, id=user.id)
            .using_db(conn)
            .update(failed_logins=F("failed_logins") + 1)
        )
        if not counted:
            return False
        failures = await column(StaffUser.filter(id=user.id).using_db(conn), "failed_logins")
        if failures[0] < LOCK_AFTER_FAILURES:
            return False
        locked_until = now + timedelta(minutes=LOCK_MINUTES)
        await (
            StaffUser.filter(id=user.id)
            .using_db(conn)
            .update(failed_logins=0, locked_until=locked_until)
        )
        await SecurityEvent.create(
            staff_id=user.id,
            kind="locked",
            detail=f"{LOCK_AFTER_FAILURES} failed logins",
            created_at=now,
            using_db=conn,
        )
    user.failed_logins, user.locked_until = 0, locked_until
    return True


async def _unknown_user_failure(services: Services, username: str) -> None:
    """Unknown names lock out like real ones, so the answers do not tell which accounts exist."""
    key = services.key("login-failures", hashlib.sha256(username.encode()).hexdigest()[:32])
    failures = await services.redis.incr(key)
    if failures == 1:
        await services.redis.expire(key, LOCK_MINUTES * 60)
    if failures > LOCK_AFTER_FAILURES:
        raise Unauthorized(
            "登录失败次数过多，账号已临时锁定，请15分钟后再试", code="account_locked"
        )


def _check_token(token: str) -> str:
    if not token.isascii() or len(token) > 128:
        raise Unauthorized("登录已失效，请重新登录", code="token_invalid")
    return token_hash(token)


async def session_for(token: str, kind: str) -> AuthSession:
    session = await AuthSession.get_or_none(token_hash=_check_token(token), kind=kind)
    if session is None or session.revoked_at is not None or session.expires_at <= clock.now():
        raise Unauthorized("登录已失效，请重新登录", code="token_invalid")
    return session


_CITIZEN_SESSION = """
SELECT s.citizen_id, s.expires_at, s.revoked_at, c.openid
FROM auth_session s JOIN citizen c ON c.id = s.citizen_id
WHERE s.token_hash = $1 AND s.kind = 'citizen'
"""


def session_invalid() -> Unauthorized:
    return Unauthorized("登录已失效，请重新登录", code="token_invalid")


def remembered_citizen(services: Services, token: str) -> CitizenIdentity | UnreadSession:
    """Whose citizen session this is if this worker read it lately (``session_cache``), else the
    session still to be read; a malformed token → 401."""
    digest = _check_token(token)
    known = services.sessions.get(digest, clock.now())
    if known is not None:
        return known
    return UnreadSession(digest, services.sessions.mark())


def remember_citizen(
    services: Services, read: UnreadSession, identity: CitizenIdentity, *, expires_at: datetime
) -> None:
    """Keeps a session read elsewhere (with a rating) as ``citizen_identity`` keeps its own."""
    services.sessions.put(read.digest, identity, expires_at=expires_at, mark=read.mark)


async def read_citizen(services: Services, who: CitizenIdentity | UnreadSession) -> CitizenIdentity:
    """Whose session ``who`` is, reading it in one query if it is not known yet; 401 if it is
    unknown, revoked or expired."""
    if isinstance(who, CitizenIdentity):
        return who
    now = clock.now()
    if db.is_postgres():
        _, rows = await db.default_connection().execute_query(_CITIZEN_SESSION, [who.digest])
    else:
        rows = await AuthSession.filter(token_hash=who.digest, kind="citizen").values(
            "citizen_id", "expires_at", "revoked_at", openid="citizen__openid"
        )
    row = rows[0] if rows else None
    if row is None or row["revoked_at"] is not None or row["expires_at"] <= now:
        raise session_invalid()
    identity = CitizenIdentity(id=row["citizen_id"], openid=row["openid"])
    remember_citizen(services, who, identity, expires_at=row["expires_at"])
    return identity


async def citizen_identity(services: Services, token: str) -> CitizenIdentity:
    """Whose citizen session this is, from this worker's memory when it read it lately
    (``session_cache``), else in one query."""
    return await read_citizen(services, remembered_citizen(services, token))


async def citizen_for(services: Services, token: str) -> Citizen:
    identity = await citizen_identity(services, token)
    return await Citizen.get(id=identity.id)


async def staff_for(token: str) -> StaffUser:
    session = await session_for(token, "staff")
    user = await StaffUser.get(id=session.staff_id).prefetch_related("unit")
    if not user.is_active:
        raise Unauthorized("账号已停用", code="account_disabled")
    return user


async def revoke(services: Services, token: str, kind: str) -> None:
    """Logout: the session ends now, in this worker before the answer and in the others when the
    news arrives (``session_cache``). Only a token of ``kind`` is revoked through this door."""
    session = await session_for(token, kind)
    await AuthSession.filter(id=session.id).update(revoked_at=clock.now())
    services.sessions.forget(session.token_hash)
    await broadcast.publish_revoked(services, session.token_hash)


async def refuse_demo_accounts() -> None:
    """Production never starts while a demo account (known password) exists."""
    demo = await column(StaffUser.filter(is_demo=True), "username")
    if demo:
        raise RuntimeError(f"refusing to start in production with demo accounts: {', '.join(demo)}")
