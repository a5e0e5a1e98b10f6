from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import current_citizen, int_arg, json_body, services
from api.schemas import AnonymityUpdate, ComplaintCreate, FeedbackCreate, SupplementCreate
from api.services import anonymity, citizen_cases
from api.services.citizen_cases import MY_CASES_MAX
from api.services.views import citizen_view
from api.validation import parse_json

bp = Blueprint("complaints", url_prefix="/api/v1")


@bp.post("/complaints")
@openapi.definition(summary="投诉举报", body=json_body(ComplaintCreate), tag="citizen")
async def file_complaint(request: Request) -> HTTPResponse:
    citizen = await current_citizen(request)
    body = parse_json(request, ComplaintCreate)
    return json(await citizen_cases.file_complaint(services(request), citizen, body), status=201)


@bp.get("/complaints")
@openapi.definition(summary="我的案件（最新的在前）：limit（1–100，默认 100）", tag="citizen")
async def my_complaints(request: Request) -> HTTPResponse:
    citizen = await current_citizen(request)
    limit = int_arg(request, "limit", default=MY_CASES_MAX, low=1, high=MY_CASES_MAX)
    return json({"items": await citizen_cases.my_cases(services(request), citizen, limit=limit)})


@bp.get("/complaints/<ticket_no:str>")
@openapi.definition(summary="案件进度与办理过程", tag="citizen")
async def complaint(request: Request, ticket_no: str) -> HTTPResponse:
    citizen = await current_citizen(request)
    return json(
        await citizen_view(await citizen_cases.own_case(services(request), citizen, ticket_no))
    )


@bp.post("/complaints/<ticket_no:str>/feedback")
@openapi.definition(
    summary="评价办理结果（不满意则上一级复核）",
    body=json_body(FeedbackCreate),
    tag="citizen",
)
async def feedback(request: Request, ticket_no: str) -> HTTPResponse:
    citizen = await current_citizen(request)
    body = parse_json(request, FeedbackCreate)
    return json(await citizen_cases.give_feedback(services(request), citizen, ticket_no, body))


@bp.post("/complaints/<ticket_no:str>/supplements")
@openapi.definition(
    summary="补充材料（办理时限恢复计算）",
    body=json_body(SupplementCreate),
    tag="citizen",
)
async def supplement(request: Request, ticket_no: str) -> HTTPResponse:
    citizen = await current_citizen(request)
    body = parse_json(request, SupplementCreate)
    return json(
        await citizen_cases.supply_info(services(request), citizen, ticket_no, body.message)
    )


@bp.post("/complaints/<ticket_no:str>/anonymity")
@openapi.definition(
    summary="改为匿名（提交后可随时改为匿名，不能改回实名）",
    body=json_body(AnonymityUpdate),
    tag="citizen",
)
async def set_anonymity(request: Request, ticket_no: str) -> HTTPResponse:
    citizen = await current_citizen(request)
    body = parse_json(request, AnonymityUpdate)
    return json(
        await anonymity.set_anonymity(
            services(request), citizen, ticket_no, anonymous=body.anonymous
        )
    )
