"""Public disclosure of a unit (执法公示), and its maintenance by administrators."""

from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import current_staff, json_body
from api.schemas import UnitDisclosureUpdate
from api.services import disclosure
from api.validation import parse_json

bp = Blueprint("units", url_prefix="/api/v1")


@bp.get("/units/<code:str>")
@openapi.definition(
    summary="执法公示：单位职责、执法依据、执法程序和监督渠道（无需登录）", tag="citizen"
)
async def public_unit(request: Request, code: str) -> HTTPResponse:
    return json(await disclosure.public_unit(code))


@bp.put("/admin/units/<code:str>/disclosure")
@openapi.definition(
    summary="维护单位公示内容（省级：全部；市级：本辖区；null 恢复默认）",
    body=json_body(UnitDisclosureUpdate),
    tag="admin",
)
async def update_disclosure(request: Request, code: str) -> HTTPResponse:
    user = await current_staff(request)
    body = parse_json(request, UnitDisclosureUpdate)
    return json(await disclosure.update_disclosure(user, code, body))
