from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import bearer, services
from api.schemas import StaffLogin, WeChatLogin
from api.services import auth
from api.validation import parse_json

bp = Blueprint("auth", url_prefix="/api/v1")


@bp.post("/auth/wechat")
@openapi.definition(
    summary="小程序登录（wx.login 的 code）", body={"application/json": WeChatLogin}, tag="citizen"
)
async def wechat_login(request: Request) -> HTTPResponse:
    body = parse_json(request, WeChatLogin)
    issued = await auth.login_citizen(services(request), body.code)
    return json({"token": issued.token, "expires_in": issued.expires_in})


@bp.post("/staff/auth/login")
@openapi.definition(summary="工作人员登录", body={"application/json": StaffLogin}, tag="staff")
async def staff_login(request: Request) -> HTTPResponse:
    body = parse_json(request, StaffLogin)
    issued = await auth.login_staff(services(request), body.username, body.password)
    return json({"token": issued.token, "expires_in": issued.expires_in})


@bp.post("/staff/auth/logout")
@openapi.definition(summary="工作人员退出登录", tag="staff")
async def staff_logout(request: Request) -> HTTPResponse:
    await auth.revoke(bearer(request))
    return json({"ok": True})
