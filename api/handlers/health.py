from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from tortoise import connections

from api.handlers.common import services

bp = Blueprint("health")


@bp.get("/healthz")
async def healthz(request: Request) -> HTTPResponse:
    ctx = services(request)
    await connections.get("default").execute_query("SELECT 1")
    await ctx.redis.ping()
    details = {"database": "ok", "redis": "ok", "sla_profile": ctx.policy.name}
    if ctx.unknown_years:
        details["calendar_unknown_years"] = sorted(ctx.unknown_years)  # type: ignore[assignment]
    return json({"status": "ok", "details": details})
