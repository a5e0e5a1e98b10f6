"""Integrity of ratings, staff side: encounter codes and the flagged-ratings queue."""

from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import choice_arg, current_staff, int_arg, json_body, services
from api.schemas import EncounterCreate, RatingReviewCreate
from api.services import encounters, rating_flags
from api.validation import parse_json

bp = Blueprint("integrity", url_prefix="/api/v1/staff")


@bp.post("/encounters")
@openapi.definition(
    summary="生成一次性现场评价码（动态二维码，默认10分钟有效）：本人，或本单位执法人员（cert_no）",
    body=json_body(EncounterCreate),
    tag="staff",
)
async def issue_encounter(request: Request) -> HTTPResponse:
    user = await current_staff(request)
    body = parse_json(request, EncounterCreate)
    return json(await encounters.issue(services(request), user, body), status=201)


@bp.get("/ratings/flagged")
@openapi.definition(
    summary="被标记待审核的评价（本单位及下级单位）：status（pending/confirmed/cleared）、limit",
    tag="staff",
)
async def flagged(request: Request) -> HTTPResponse:
    user = await current_staff(request)
    status = choice_arg(request, "status", rating_flags.FlagStatus.FLAGGED)
    limit = int_arg(request, "limit", default=50, low=1, high=200)
    return json(await rating_flags.flagged(services(request), user, status=status, limit=limit))


@bp.post("/ratings/<evaluation_id:str>/review")
@openapi.definition(
    summary="审核被标记的评价：confirm（确认异常，不计入考核）或 clear（解除标记）",
    body=json_body(RatingReviewCreate),
    tag="staff",
)
async def review(request: Request, evaluation_id: str) -> HTTPResponse:
    user = await current_staff(request)
    body = parse_json(request, RatingReviewCreate)
    return json(await rating_flags.review(services(request), user, evaluation_id, body))


@bp.get("/ratings/summary")
@openapi.definition(summary="本单位及下级单位的评价统计（计入考核的与被标记的分列）", tag="staff")
async def summary(request: Request) -> HTTPResponse:
    user = await current_staff(request)
    return json(await rating_flags.summary(user))
