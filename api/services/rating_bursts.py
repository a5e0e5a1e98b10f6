"""Burst flags, set when a rating is stored: flagged for review, never hidden or dropped.

The rules (DOMAIN.md, ``rating_flags`` for the reviewer's side): ``officer_burst`` —
``burst_officer_ratings`` (10) ratings of one officer within ``burst_officer_minutes`` (10);
``citizen_burst`` — one citizen rating ``burst_citizen_officers`` (5) different officers within
``burst_citizen_minutes`` (60). When a rule fires, every rating of the burst is flagged (the
earlier ones too), each with the rule as a reason; a rating a reviewer decided on is left as it is.

In the rating's own transaction, after its insert and under the officer's lock, so the
counts see the rating itself and every rating of the officer before it, and the flags are
committed with the rating (the 201 is only sent after). On PostgreSQL the rules run inside the
``pingyi_rate`` call (``rating_store``), given the windows from ``windows``; on the embedded
SQLite default the same rules go through the ORM here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from api import clock
from api.models import Evaluation
from api.services.context import Services
from api.services.rating_flags import FlagStatus
from api.services.rating_store import Bursts


def windows(services: Services, now: datetime) -> Bursts:
    s = services.settings
    return Bursts(
        officer_since=now - timedelta(minutes=s.burst_officer_minutes),
        officer_threshold=max(s.burst_officer_ratings, 0),
        officer_minutes=s.burst_officer_minutes,
        citizen_since=now - timedelta(minutes=s.burst_citizen_minutes),
        citizen_threshold=max(s.burst_citizen_officers, 0),
        citizen_minutes=s.burst_citizen_minutes,
    )


# --- the same rules through the ORM ------------------------------------------------------------


def _reason(code: str, *, count: int, minutes: float, threshold: int) -> dict[str, Any]:
    return {"code": code, "count": count, "minutes": minutes, "threshold": threshold}


async def _officer_burst(
    services: Services, ev: Evaluation, conn: BaseDBAsyncClient
) -> list[Evaluation]:
    s = services.settings
    if s.burst_officer_ratings <= 0:
        return []
    since = ev.created_at - timedelta(minutes=s.burst_officer_minutes)
    rows = await Evaluation.filter(officer_id=ev.officer_id, created_at__gt=since).using_db(conn)
    return rows if len(rows) >= s.burst_officer_ratings else []


async def _citizen_burst(
    services: Services, ev: Evaluation, conn: BaseDBAsyncClient
) -> list[Evaluation]:
    s = services.settings
    if s.burst_citizen_officers <= 0 or ev.citizen_id is None:
        return []
    since = ev.created_at - timedelta(minutes=s.burst_citizen_minutes)
    rows = await Evaluation.filter(citizen_id=ev.citizen_id, created_at__gt=since).using_db(conn)
    return rows if len({r.officer_id for r in rows}) >= s.burst_citizen_officers else []


async def _flag(rows: list[Evaluation], reason: dict[str, Any], conn: BaseDBAsyncClient) -> None:
    now = clock.now()
    for row in rows:
        if row.flag_status not in (FlagStatus.NONE, FlagStatus.PENDING):
            continue  # a reviewer already decided on this one
        if any(r.get("code") == reason["code"] for r in row.flag_reasons):
            continue
        row.flag_reasons = [*row.flag_reasons, reason]
        row.flagged = True
        row.flag_status = FlagStatus.PENDING
        row.flagged_at = row.flagged_at or now
        await row.save(
            update_fields=["flag_reasons", "flagged", "flag_status", "flagged_at"], using_db=conn
        )


async def flag_bursts_orm(
    services: Services, evaluation: Evaluation, *, conn: BaseDBAsyncClient
) -> None:
    s = services.settings
    officer_rows = await _officer_burst(services, evaluation, conn)
    if officer_rows:
        reason = _reason(
            "officer_burst",
            count=len(officer_rows),
            minutes=s.burst_officer_minutes,
            threshold=s.burst_officer_ratings,
        )
        await _flag(officer_rows, reason, conn)
    citizen_rows = await _citizen_burst(services, evaluation, conn)
    if citizen_rows:
        reason = _reason(
            "citizen_burst",
            count=len({r.officer_id for r in citizen_rows}),
            minutes=s.burst_citizen_minutes,
            threshold=s.burst_citizen_officers,
        )
        # The same row may be in both lists: reload so its first reason is not overwritten.
        ids = [r.id for r in citizen_rows]
        await _flag(await Evaluation.filter(id__in=ids).using_db(conn), reason, conn)
