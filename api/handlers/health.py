from __future__ import annotations

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse, json
from tortoise import connections

from api.handlers.common import services
from api.services import calendar_alert

bp = Blueprint("health")


@bp.get("/healthz")
async def healthz(request: Request) -> HTTPResponse:
    ctx = services(request)
    await connections.get("default").execute_query("SELECT 1")
    await ctx.redis.ping()
    details = {"database": "ok", "redis": "ok", "sla_profile": ctx.policy.name}
    # From the database (any process may have found the gap), and what this process saw.
    gaps = await calendar_alert.open_gaps()
    unknown = {g.year for g in gaps} | ctx.unknown_years
    if unknown:
        details["calendar_unknown_years"] = sorted(unknown)  # type: ignore[assignment]
        details["calendar_alerts"] = {  # type: ignore[assignment]
            str(g.year): "queued" if g.alerted_at else "waiting" for g in gaps
        }
    return json({"status": "ok", "details": details})
