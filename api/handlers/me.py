from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import bearer, json_body, services
from api.schemas import PhoneCreate
from api.services import citizen_phone
from api.validation import parse_json

bp = Blueprint("me", url_prefix="/api/v1")


@bp.get("/me")
@openapi.definition(summary="我的资料（手机号码脱敏）", tag="citizen")
async def me(request: Request) -> HTTPResponse:
    return json(await citizen_phone.profile(services(request), bearer(request)))


@bp.post("/me/phone")
@openapi.definition(
    summary="绑定手机号（getPhoneNumber 的 code，或 encrypted_data + iv）",
    body=json_body(PhoneCreate),
    tag="citizen",
)
async def set_phone(request: Request) -> HTTPResponse:
    token = bearer(request)
    body = parse_json(request, PhoneCreate)
    return json(await citizen_phone.set_phone(services(request), token, body))
