from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import openapi

from api.handlers.common import current_staff, inbox_filter, json_body, services
from api.schemas import (
    ContactCreate,
    EscalateCreate,
    ExtensionCreate,
    ExtensionDecision,
    InfoRequestCreate,
    NoteCreate,
    ReplyCreate,
    TransferCreate,
)
from api.services import inbox as inbox_service
from api.services import reply_templates as reply_templates_service
from api.services import staff_cases
from api.validation import parse_json

bp = Blueprint("staff", url_prefix="/api/v1/staff")


@bp.get("/complaints")
@openapi.definition(
    summary="本单位及下级单位的案件（最紧急的在前）：status、category、unit、overdue、due_before、cursor、limit",
    tag="staff",
)
async def inbox(request: Request) -> HTTPResponse:
    user = await current_staff(request)
    return json(await inbox_service.inbox(user, inbox_filter(request)))


@bp.get("/complaints/<ticket_no:str>")
@openapi.definition(summary="案件详情", tag="staff")
async def case_detail(request: Request, ticket_no: str) -> HTTPResponse:
    user = await current_staff(request)
    return json(await staff_cases.view_case(user, ticket_no))


@bp.post("/complaints/<ticket_no:str>/acknowledge")
@openapi.definition(summary="签收", tag="staff")
async def acknowledge(request: Request, ticket_no: str) -> HTTPResponse:
    user = await current_staff(request)
    return json(await staff_cases.acknowledge(user, ticket_no, services(request)))


@bp.post("/complaints/<ticket_no:str>/reply")
@openapi.definition(
    summary="答复群众（复核中的案件答复后办结）",
    body=json_body(ReplyCreate),
    tag="staff",
)
async def reply(request: Request, ticket_no: str) -> HTTPResponse:
    user = await current_staff(request)
    body = parse_json(request, ReplyCreate)
    return json(await staff_cases.reply(services(request), user, ticket_no, body.message))


def _post(path: str, summary: str, body: type[BaseModel] | None = None) -> Any:
    """A POST action on one case, registered with its OpenAPI summary and request body."""
    route = bp.post(f"/complaints/<ticket_no:str>/{path}")
    spec = openapi.definition(summary=summary, tag="staff", body=json_body(body) if body else None)

    def register(handler: Any) -> Any:
        return route(spec(handler))

    return register


@_post("contact", "记录与群众的联系（停止首次联系时限）", ContactCreate)
async def contact(request: Request, ticket_no: str) -> HTTPResponse:
    user, body = await current_staff(request), parse_json(request, ContactCreate)
    return json(await staff_cases.log_contact(user, ticket_no, body))


@_post("request-info", "请群众补充材料（暂停办理时限）", InfoRequestCreate)
async def request_info(request: Request, ticket_no: str) -> HTTPResponse:
    user, body = await current_staff(request), parse_json(request, InfoRequestCreate)
    return json(await staff_cases.request_info(services(request), user, ticket_no, body.message))


@_post("notes", "内部备注（群众不可见）", NoteCreate)
async def note(request: Request, ticket_no: str) -> HTTPResponse:
    user, body = await current_staff(request), parse_json(request, NoteCreate)
    return json(await staff_cases.add_note(user, ticket_no, body.text))


@_post("transfer", "转办（需说明原因，最多两次，时限不重置）", TransferCreate)
async def transfer(request: Request, ticket_no: str) -> HTTPResponse:
    user, body = await current_staff(request), parse_json(request, TransferCreate)
    return json(await staff_cases.transfer(services(request), user, ticket_no, body))


@_post("escalate", "上报上级单位办理", EscalateCreate)
async def escalate(request: Request, ticket_no: str) -> HTTPResponse:
    user, body = await current_staff(request), parse_json(request, EscalateCreate)
    return json(await staff_cases.escalate(services(request), user, ticket_no, body.reason))


@_post("extension", "申请延期（一次，≤10个工作日，上级审批）", ExtensionCreate)
async def extension(request: Request, ticket_no: str) -> HTTPResponse:
    user, body = await current_staff(request), parse_json(request, ExtensionCreate)
    return json(await staff_cases.request_extension(services(request), user, ticket_no, body))


@_post("extension/decision", "审批延期申请（上级单位）", ExtensionDecision)
async def extension_decision(request: Request, ticket_no: str) -> HTTPResponse:
    user, body = await current_staff(request), parse_json(request, ExtensionDecision)
    return json(await staff_cases.decide_extension(services(request), user, ticket_no, body))


@_post("close", "评价期满后办结")
async def close(request: Request, ticket_no: str) -> HTTPResponse:
    user = await current_staff(request)
    return json(await staff_cases.close(services(request), user, ticket_no))


@bp.get("/complaints/<ticket_no:str>/reply-templates")
@openapi.definition(summary="答复模板（按问题类别，已填入案件信息，可编辑）", tag="staff")
async def reply_templates(request: Request, ticket_no: str) -> HTTPResponse:
    user = await current_staff(request)
    return json(await reply_templates_service.templates_for_case(user, ticket_no))
