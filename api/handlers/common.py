"""What every handler needs: the services of this process and the caller's identity."""

from __future__ import annotations

from sanic.request import Request

from api.errors import Unauthorized, ValidationFailed
from api.models import Citizen, StaffUser
from api.services import auth
from api.services.context import Services


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
    return await auth.citizen_for(bearer(request))


async def current_staff(request: Request) -> StaffUser:
    return await auth.staff_for(bearer(request))


def int_arg(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValidationFailed(
            f"参数 {name} 应为 {low}–{high} 的整数",
            details={"fields": [{"field": name, "reason": "取值无效"}]},
        )
    return value
