from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import current_staff, json_body
from api.schemas import ContentDecision
from api.services import content_review
from api.validation import parse_json

bp = Blueprint("content", url_prefix="/api/v1/staff")


@bp.get("/content-holds")
@openapi.definition(summary="待人工审核的群众内容（本单位及下级）", tag="staff")
async def holds(request: Request) -> HTTPResponse:
    user = await current_staff(request)
    return json(await content_review.queue(user))


@bp.post("/complaints/<ticket_no:str>/content/<hold_id:int>")
@openapi.definition(
    summary="审核待审内容：放行（release）或不予放行（reject）",
    body=json_body(ContentDecision),
    tag="staff",
)
async def decide(request: Request, ticket_no: str, hold_id: int) -> HTTPResponse:
    user = await current_staff(request)
    body = parse_json(request, ContentDecision)
    return json(
        await content_review.decide(
            user, ticket_no, hold_id, release=body.decision == "release", note=body.note
        )
    )
