"""Sign-in for citizens (WeChat login code) and staff (password), and bearer-token sessions."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from api import clock
from api.db import column
from api.errors import Unauthorized, UpstreamUnavailable
from api.integrations.wechat import WeChatError, WeChatSession
from api.models import AuthSession, Citizen, SecurityEvent, StaffUser
from api.services.context import Services
from api.services.passwords import dummy_verify, verify_password

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


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _issue(
    *, kind: str, ttl: int, citizen_id: int | None = None, staff_id: int | None = None
) -> IssuedToken:
    token = secrets.token_urlsafe(32)
    await AuthSession.create(
        token_hash=_hash(token),
        kind=kind,
        citizen_id=citizen_id,
        staff_id=staff_id,
        expires_at=clock.now() + timedelta(seconds=ttl),
    )
    return IssuedToken(token=token, expires_in=ttl)


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


async def login_citizen(services: Services, code: str) -> IssuedToken:
    session = await wechat_session(services, code)
    citizen, _ = await Citizen.get_or_create(
        openid=session.openid, defaults={"unionid": session.unionid}
    )
    return await _issue(
        kind="citizen", ttl=services.settings.citizen_token_ttl, citizen_id=citizen.id
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
        user.failed_logins += 1
        if user.failed_logins >= LOCK_AFTER_FAILURES:
            user.failed_logins, user.locked_until = 0, now + timedelta(minutes=LOCK_MINUTES)
            await SecurityEvent.create(
                staff_id=user.id,
                kind="locked",
                detail=f"{LOCK_AFTER_FAILURES} failed logins",
                created_at=now,
            )
        await user.save(update_fields=["failed_logins", "locked_until"])
        raise Unauthorized("用户名或密码错误", code="invalid_credentials")
    if user.failed_logins:
        user.failed_logins = 0
        await user.save(update_fields=["failed_logins"])
    return await issue_staff_token(services, user)


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


async def session_for(token: str, kind: str) -> AuthSession:
    if not token.isascii() or len(token) > 128:
        raise Unauthorized("登录已失效，请重新登录", code="token_invalid")
    session = await AuthSession.get_or_none(token_hash=_hash(token), kind=kind)
    if session is None or session.revoked_at is not None or session.expires_at <= clock.now():
        raise Unauthorized("登录已失效，请重新登录", code="token_invalid")
    return session


async def citizen_for(token: str) -> Citizen:
    session = await session_for(token, "citizen")
    return await Citizen.get(id=session.citizen_id)


async def staff_for(token: str) -> StaffUser:
    session = await session_for(token, "staff")
    user = await StaffUser.get(id=session.staff_id).prefetch_related("unit")
    if not user.is_active:
        raise Unauthorized("账号已停用", code="account_disabled")
    return user


async def revoke(token: str, kind: str) -> None:
    """Logout: the session ends now. Only a token of ``kind`` is revoked through this door."""
    session = await session_for(token, kind)
    await AuthSession.filter(id=session.id).update(revoked_at=clock.now())


async def refuse_demo_accounts() -> None:
    """Production never starts while a demo account (known password) exists."""
    demo = await column(StaffUser.filter(is_demo=True), "username")
    if demo:
        raise RuntimeError(f"refusing to start in production with demo accounts: {', '.join(demo)}")
