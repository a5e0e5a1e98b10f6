from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api import clock
from api.handlers.common import choice_arg, current_staff, int_arg, json_body, services
from api.models.outbox import OutboxStatus
from api.schemas import CalendarOverrideSet, PublicSupervisorSet, UnitContactUpdate
from api.services import (
    admin,
    calendar_admin,
    card_admin,
    permissions,
    public_supervisors,
    staff_accounts,
    units_admin,
)
from api.validation import parse_json

bp = Blueprint("admin", url_prefix="/api/v1/admin")


@bp.get("/sms")
@openapi.definition(summary="短信发件箱（省级）", tag="admin")
async def sms(request: Request) -> HTTPResponse:
    user = await current_staff(request)
    limit = int_arg(request, "limit", default=100, low=1, high=500)
    before = int_arg(request, "cursor", default=0, low=1, high=2**31 - 1) or None
    return json(
        await admin.sms_list(
            services(request),
            user,
            status=choice_arg(request, "status", OutboxStatus.ALL),
            ticket_no=request.args.get("ticket_no"),
            limit=limit,
            before=before,
        )
    )


@bp.post("/staff/<username:str>/disable")
@openapi.definition(summary="停用工作人员账号（立即生效）", tag="admin")
async def disable_staff(request: Request, username: str) -> HTTPResponse:
    admin = await current_staff(request)
    return json(await staff_accounts.disable_account(admin, username))


# --- calendar overrides and unit contacts (api/services/calendar_admin.py, units_admin.py) -----


@bp.get("/calendar")
@openapi.definition(summary="工作日历：某年每天的有效状态（省级）", tag="admin")
async def calendar_year(request: Request) -> HTTPResponse:
    user = await current_staff(request)
    permissions.require(user, permissions.CALENDAR_MANAGE)  # before the arguments are judged
    year = int_arg(
        request,
        "year",
        default=clock.to_china(clock.now()).year,
        low=calendar_admin.YEARS[0],
        high=calendar_admin.YEARS[1],
    )
    return json(await calendar_admin.year_view(user, year))


@bp.put("/calendar/<day:str>")
@openapi.definition(
    summary="设置某日为工作日/休息日（省级，立即生效）",
    tag="admin",
    body=json_body(CalendarOverrideSet),
)
async def calendar_set(request: Request, day: str) -> HTTPResponse:
    user = await current_staff(request)
    permissions.require(user, permissions.CALENDAR_MANAGE)
    when = calendar_admin.parse_date(day)
    body = parse_json(request, CalendarOverrideSet)
    return json(await calendar_admin.set_override(services(request), user, when, body))


@bp.delete("/calendar/<day:str>")
@openapi.definition(summary="撤销某日的人工调整（省级）", tag="admin")
async def calendar_delete(request: Request, day: str) -> HTTPResponse:
    user = await current_staff(request)
    permissions.require(user, permissions.CALENDAR_MANAGE)
    when = calendar_admin.parse_date(day)
    return json(await calendar_admin.delete_override(services(request), user, when))


@bp.put("/units/<code:str>")
@openapi.definition(
    summary="设置单位负责人手机号、监督电话（省级：全部；市级：本辖区）",
    tag="admin",
    body=json_body(UnitContactUpdate),
)
async def unit_contacts(request: Request, code: str) -> HTTPResponse:
    user = await current_staff(request)
    body = parse_json(request, UnitContactUpdate)
    return json(await units_admin.update_contacts(services(request), user, code, body))


@bp.post("/cards/<code:str>/revoke")
@openapi.definition(summary="停用评议卡（立即生效）", tag="admin")
async def card_revoke(request: Request, code: str) -> HTTPResponse:
    user = await current_staff(request)
    return json(await card_admin.revoke_card(services(request), user, code))


@bp.post("/officers/<cert_no:str>/cards")
@openapi.definition(summary="为执法人员补发新评议卡（原卡停用）", tag="admin")
async def card_reissue(request: Request, cert_no: str) -> HTTPResponse:
    user = await current_staff(request)
    return json(await card_admin.reissue_card(services(request), user, cert_no), status=201)


@bp.put("/citizens/<code:str>/public-supervisor")
@openapi.definition(
    summary="聘任或解聘群众监督员（市级：本辖区；省级：全部）：以群众“我的”页面显示的监督员登记码",
    body=json_body(PublicSupervisorSet),
    tag="admin",
)
async def public_supervisor(request: Request, code: str) -> HTTPResponse:
    user = await current_staff(request)
    body = parse_json(request, PublicSupervisorSet)
    return json(await public_supervisors.set_appointment(user, code, body))
