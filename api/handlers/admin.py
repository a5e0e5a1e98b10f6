from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import choice_arg, current_staff, int_arg, services
from api.models.outbox import OutboxStatus
from api.services import admin, staff_accounts

bp = Blueprint("admin", url_prefix="/api/v1/admin")


@bp.get("/sms")
@openapi.definition(summary="短信发件箱（省级）", tag="admin")
async def sms(request: Request) -> HTTPResponse:
    user = await current_staff(request)
    limit = int_arg(request, "limit", default=100, low=1, high=500)
    return json(
        await admin.sms_list(
            services(request),
            user,
            status=choice_arg(request, "status", OutboxStatus.ALL),
            ticket_no=request.args.get("ticket_no"),
            limit=limit,
        )
    )


@bp.post("/staff/<username:str>/disable")
@openapi.definition(summary="停用工作人员账号（立即生效）", tag="admin")
async def disable_staff(request: Request, username: str) -> HTTPResponse:
    admin = await current_staff(request)
    return json(await staff_accounts.disable_account(admin, username))
