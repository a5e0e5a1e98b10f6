from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import current_staff, int_arg, services
from api.schemas import ReplyCreate
from api.services import staff_cases
from api.validation import parse_json

bp = Blueprint("staff", url_prefix="/api/v1/staff")


@bp.get("/complaints")
@openapi.definition(summary="本单位及下级单位的案件（最紧急的在前）", tag="staff")
async def inbox(request: Request) -> HTTPResponse:
    user = await current_staff(request)
    limit = int_arg(request, "limit", default=50, low=1, high=200)
    return json(await staff_cases.inbox(user, status=request.args.get("status"), limit=limit))


@bp.get("/complaints/<ticket_no:str>")
@openapi.definition(summary="案件详情", tag="staff")
async def case_detail(request: Request, ticket_no: str) -> HTTPResponse:
    user = await current_staff(request)
    return json(await staff_cases.view_case(user, ticket_no))


@bp.post("/complaints/<ticket_no:str>/acknowledge")
@openapi.definition(summary="签收", tag="staff")
async def acknowledge(request: Request, ticket_no: str) -> HTTPResponse:
    user = await current_staff(request)
    return json(await staff_cases.acknowledge(user, ticket_no))


@bp.post("/complaints/<ticket_no:str>/reply")
@openapi.definition(
    summary="答复群众（复核中的案件答复后办结）",
    body={"application/json": ReplyCreate},
    tag="staff",
)
async def reply(request: Request, ticket_no: str) -> HTTPResponse:
    user = await current_staff(request)
    body = parse_json(request, ReplyCreate)
    return json(await staff_cases.reply(services(request), user, ticket_no, body.message))
