"""What every handler needs: the services of this process and the caller's identity."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sanic.request import Request
from sanic_ext.extensions.openapi.definitions import Component

from api import clock
from api.errors import Unauthorized, ValidationFailed
from api.models import Citizen, StaffUser
from api.models.case import CaseStatus
from api.services import auth
from api.services.catalog import CATEGORIES
from api.services.context import Services
from api.services.inbox import InboxFilter
from api.validation import field_error


def services(request: Request) -> Services:
    ctx: Services = request.app.ctx.services
    return ctx


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("请先登录", code="token_missing")
    return token.strip()


async def current_citizen(request: Request) -> Citizen:
    return await auth.citizen_for(services(request), bearer(request))


async def current_staff(request: Request) -> StaffUser:
    return await auth.staff_for(bearer(request))


def int_arg(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw) if raw.isascii() else low - 1  # not "１０" (full-width digits)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValidationFailed(
            f"参数 {name} 应为 {low}–{high} 的整数",
            details={"fields": [{"field": name, "reason": "取值无效", "type": "int_parsing"}]},
        )
    return value


def choice_arg(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise ValidationFailed(
            f"参数 {name} 应为 {'、'.join(choices)} 之一",
            details={"fields": [{"field": name, "reason": "取值无效", "type": "enum"}]},
        )
    return raw


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route: the model's own JSON schema, as a component."""
    return {"application/json": Component(model)}


def bool_arg(request: Request, name: str) -> bool | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    if raw not in ("true", "false"):
        raise field_error(name, "应为 true 或 false")
    return raw == "true"


def time_arg(request: Request, name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise field_error(name, "应为带时区的 ISO 8601 时间")
    # One instant, one spelling: stored times are China time, and SQLite compares them as text.
    return clock.to_china(value)


def inbox_filter(request: Request) -> InboxFilter:
    category = choice_arg(request, "category", tuple(CATEGORIES))
    return InboxFilter(
        status=choice_arg(request, "status", CaseStatus.ALL),
        category=category,
        unit_code=(request.args.get("unit") or None),
        overdue=bool_arg(request, "overdue"),
        due_before=time_arg(request, "due_before"),
        cursor=request.args.get("cursor") or None,
        limit=int_arg(request, "limit", default=50, low=1, high=200),
    )
