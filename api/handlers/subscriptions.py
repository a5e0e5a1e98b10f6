"""WeChat subscribe messages: the templates to ask for, and the citizen's accepts."""

from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import current_citizen, json_body, services
from api.schemas.subscribe import SubscriptionCreate
from api.services import subscriptions
from api.validation import parse_json

bp = Blueprint("subscriptions", url_prefix="/api/v1")


@bp.get("/subscriptions/templates")
@openapi.definition(summary="订阅消息模板（wx.requestSubscribeMessage 的 tmplIds）", tag="citizen")
async def templates(request: Request) -> HTTPResponse:
    return json(subscriptions.templates(services(request)))


@bp.post("/subscriptions")
@openapi.definition(
    summary="记录用户同意接收的订阅消息（每次同意可发送一条）",
    body=json_body(SubscriptionCreate),
    tag="citizen",
)
async def subscribe(request: Request) -> HTTPResponse:
    citizen = await current_citizen(request)
    body = parse_json(request, SubscriptionCreate)
    result = await subscriptions.record_consents(services(request), citizen, body)
    return json(result, status=201)
