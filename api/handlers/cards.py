from __future__ import annotations

from json import loads

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.errors import AppError
from api.handlers.common import bearer, json_body, services
from api.schemas import EvaluationCreate
from api.services import auth, card_lookup, citizen_cases, encounters
from api.services.catalog import CATEGORIES
from api.validation import parse_json

bp = Blueprint("cards", url_prefix="/api/v1")


@bp.get("/cards/<code:str>")
@openapi.definition(
    summary="扫码查看执法人员信息（无需登录）；?e= 现场评价码时告知其是否有效", tag="citizen"
)
async def get_card(request: Request, code: str) -> HTTPResponse:
    body = await card_lookup.public_card(services(request), code)  # cached, serialised
    encounter_code = request.args.get("e")
    if encounter_code is None:
        return HTTPResponse(body, content_type="application/json")
    profile = loads(body)
    encounter = await encounters.describe(services(request), profile["code"], encounter_code)
    return json({**profile, "encounter": encounter})


@bp.post("/cards/<code:str>/evaluations")
@openapi.definition(
    summary="评价本次执法（1–5 级；2 级及以下自动立案回访）",
    body=json_body(EvaluationCreate),
    tag="citizen",
)
async def rate(request: Request, code: str) -> HTTPResponse:
    # A session this worker has not read lately is read in the rating's own call (one round
    # trip); an invalid session is still told (401) before an invalid body (422).
    who = auth.remembered_citizen(services(request), bearer(request))
    try:
        body = parse_json(request, EvaluationCreate)
    except AppError:
        await auth.read_citizen(services(request), who)
        raise
    return json(await citizen_cases.rate(services(request), who, code, body), status=201)


@bp.get("/misconduct-categories")
@openapi.definition(summary="投诉问题类别", tag="citizen")
async def categories(request: Request) -> HTTPResponse:
    items = [{"code": c.code, "label": c.label, "urgency": c.urgency} for c in CATEGORIES.values()]
    return json({"items": items})
