from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import current_staff, int_arg, services
from api.services import admin

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
            status=request.args.get("status"),
            ticket_no=request.args.get("ticket_no"),
            limit=limit,
        )
    )
