"""Staff accounts: password rules, WeChat binding, and disabling an account (effective at once)."""

from __future__ import annotations

import asyncio
import unicodedata

from tortoise.transactions import in_transaction

from api import clock
from api.db import fits
from api.errors import Conflict, NotFound, Unauthorized
from api.models import AuthSession, SecurityEvent, StaffUser, Unit
from api.services import permissions
from api.services.auth import (
    IssuedToken,
    issue_staff_token,
    record_failed_login,
    token_hash,
    wechat_session,
)
from api.services.context import Services
from api.services.passwords import hash_password, verify_password
from api.validation import field_error

MIN_PASSWORD_LENGTH = 10
DEMO_PASSWORDS = frozenset({"pingyi-demo"})


def password_problem(password: str, *, username: str, production: bool) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"密码至少 {MIN_PASSWORD_LENGTH} 位"
    if username.lower() in password.lower():
        return "密码不能包含用户名"
    if password.isdigit() or password.isalpha():
        return "密码须同时包含字母和数字或符号"
    if production and password in DEMO_PASSWORDS:
        return "生产环境不能使用演示密码"
    return None


async def change_password(
    services: Services, user: StaffUser, *, old: str, new: str, token: str
) -> None:
    """A new password ends every other session; wrong old passwords count toward the lockout."""
    if not await asyncio.to_thread(verify_password, user.password_hash, old):
        await record_failed_login(user)
        raise Unauthorized("原密码错误", code="invalid_credentials")
    problem = password_problem(
        new, username=user.username, production=services.settings.is_production
    )
    if problem is None and new == old:
        problem = "新密码不能与原密码相同"
    if problem is None and any(unicodedata.category(c)[0] in "CZ" and c != " " for c in new):
        problem = "密码不能包含控制字符或不可见字符"
    if problem:
        raise field_error("new_password", problem)
    user.password_hash = await asyncio.to_thread(hash_password, new)
    async with in_transaction() as conn:
        await user.save(update_fields=["password_hash"], using_db=conn)
        await (
            AuthSession.filter(staff_id=user.id, revoked_at__isnull=True)
            .exclude(token_hash=token_hash(token))
            .using_db(conn)
            .update(revoked_at=clock.now())
        )


async def disable_account(admin: StaffUser, username: str) -> dict[str, object]:
    """An admin disables an account in their subtree; its sessions end at once."""
    permissions.require(admin, permissions.STAFF_MANAGE)
    admin_unit = await Unit.get(id=admin.unit_id)
    target = (
        await StaffUser.get_or_none(username=username).prefetch_related("unit")
        if fits(StaffUser, "username", username)
        else None
    )
    if target is None or not target.unit.path.startswith(admin_unit.path):
        raise NotFound("未找到该账号", code="staff_not_found")
    if target.id == admin.id:
        raise Conflict("不能停用自己的账号", code="cannot_disable_self")
    now = clock.now()
    async with in_transaction() as conn:
        target.is_active = False
        await target.save(update_fields=["is_active"], using_db=conn)
        await (
            AuthSession.filter(staff_id=target.id, revoked_at__isnull=True)
            .using_db(conn)
            .update(revoked_at=now)
        )
        await SecurityEvent.create(
            staff_id=target.id, kind="disabled", actor_id=admin.id, created_at=now, using_db=conn
        )
    return {"username": target.username, "is_active": False}


async def bind_wechat(services: Services, user: StaffUser, code: str) -> dict[str, object]:
    session = await wechat_session(services, code)
    holder = await StaffUser.get_or_none(wechat_openid=session.openid)
    if holder is not None and holder.id != user.id:
        raise Conflict("该微信已绑定其他工作人员账号", code="wechat_already_bound")
    user.wechat_openid = session.openid
    await user.save(update_fields=["wechat_openid"])
    return {"bound": True}


async def login_with_wechat(services: Services, code: str) -> IssuedToken:
    session = await wechat_session(services, code)
    user = await StaffUser.get_or_none(wechat_openid=session.openid, is_active=True)
    if user is None:
        raise Unauthorized(
            "该微信未绑定工作人员账号，请先用账号密码登录后绑定", code="wechat_not_bound"
        )
    return await issue_staff_token(services, user)
