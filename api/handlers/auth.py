from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import bearer, current_staff, json_body, services
from api.schemas import PasswordChange, StaffLogin, WeChatLogin
from api.services import auth, sessions, staff_accounts
from api.validation import parse_json

bp = Blueprint("auth", url_prefix="/api/v1")


@bp.post("/auth/wechat")
@openapi.definition(
    summary="小程序登录（wx.login 的 code）", body=json_body(WeChatLogin), tag="citizen"
)
async def wechat_login(request: Request) -> HTTPResponse:
    body = parse_json(request, WeChatLogin)
    issued = await auth.login_citizen(services(request), body.code)
    return json({"token": issued.token, "expires_in": issued.expires_in})


@bp.post("/auth/refresh")
@openapi.definition(summary="续期登录（有效的令牌换新令牌；旧令牌 60 秒后失效）", tag="citizen")
async def citizen_refresh(request: Request) -> HTTPResponse:
    issued = await sessions.refresh_citizen(services(request), bearer(request))
    return json({"token": issued.token, "expires_in": issued.expires_in})


@bp.post("/auth/logout")
@openapi.definition(summary="退出登录（本次登录的令牌全部失效）", tag="citizen")
async def citizen_logout(request: Request) -> HTTPResponse:
    await sessions.logout_citizen(services(request), bearer(request))
    return json({"ok": True})


@bp.post("/staff/auth/login")
@openapi.definition(summary="工作人员登录", body=json_body(StaffLogin), tag="staff")
async def staff_login(request: Request) -> HTTPResponse:
    body = parse_json(request, StaffLogin)
    issued = await auth.login_staff(services(request), body.username, body.password)
    return json({"token": issued.token, "expires_in": issued.expires_in})


@bp.post("/staff/auth/logout")
@openapi.definition(summary="工作人员退出登录", tag="staff")
async def staff_logout(request: Request) -> HTTPResponse:
    await auth.revoke(services(request), bearer(request), kind="staff")
    return json({"ok": True})


@bp.post("/staff/auth/wechat")
@openapi.definition(
    summary="工作人员微信登录（须先绑定）", body=json_body(WeChatLogin), tag="staff"
)
async def staff_wechat_login(request: Request) -> HTTPResponse:
    body = parse_json(request, WeChatLogin)
    issued = await staff_accounts.login_with_wechat(services(request), body.code)
    return json({"token": issued.token, "expires_in": issued.expires_in})


@bp.post("/staff/auth/wechat/bind")
@openapi.definition(summary="绑定微信（小程序内登录用）", body=json_body(WeChatLogin), tag="staff")
async def staff_wechat_bind(request: Request) -> HTTPResponse:
    user = await current_staff(request)
    body = parse_json(request, WeChatLogin)
    return json(await staff_accounts.bind_wechat(services(request), user, body.code))


@bp.post("/staff/auth/password")
@openapi.definition(summary="修改密码", body=json_body(PasswordChange), tag="staff")
async def staff_password(request: Request) -> HTTPResponse:
    user = await current_staff(request)
    body = parse_json(request, PasswordChange)
    await staff_accounts.change_password(
        services(request), user, old=body.old_password, new=body.new_password, token=bearer(request)
    )
    return json({"ok": True})
