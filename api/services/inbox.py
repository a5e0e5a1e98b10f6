"""The supervisor's inbox: cases in scope, filtered, most urgent first, paged by cursor.

Order: cases with a running deadline by that deadline (breached ones are the earliest), then the
rest (closed) newest first. The cursor names the last case of a page in that order.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.expressions import Q
from tortoise.functions import Count

from api import clock
from api.db import fits
from api.models import Case, StaffUser, Unit
from api.services import permissions
from api.services.views import staff_summary
from api.validation import field_error


@dataclass(frozen=True)
class InboxFilter:
    status: str | None = None
    category: str | None = None
    unit_code: str | None = None
    overdue: bool | None = None
    due_before: datetime | None = None
    cursor: str | None = None
    limit: int = 50


def _encode(case: Case) -> str:
    raw = f"d|{case.next_due_at.isoformat()}|{case.id}" if case.next_due_at else f"n||{case.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode(cursor: str) -> tuple[str, datetime | None, int]:
    try:
        phase, due, ident = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        moment = datetime.fromisoformat(due) if due else None
        number = int(ident)
        if phase not in ("d", "n") or not 0 < number < 2**31 or (moment and moment.tzinfo is None):
            raise ValueError(cursor)
        return phase, moment, number
    except (ValueError, UnicodeDecodeError) as exc:
        raise field_error("cursor", "分页游标无效") from exc


async def _filters(user: StaffUser, scope: Q, flt: InboxFilter) -> Q:
    q = scope
    if flt.status:
        q &= Q(status=flt.status)
    if flt.category:
        q &= Q(category_index__contains=f"|{flt.category}|")
    if flt.unit_code:
        unit = (
            await Unit.get_or_none(code=flt.unit_code)
            if fits(Unit, "code", flt.unit_code)
            else None
        )
        if unit is None:
            raise field_error("unit", "单位不存在")
        q &= Q(handling_path__startswith=unit.path)
    if flt.overdue is not None:
        now = clock.now()
        q &= (
            Q(next_due_at__lte=now)
            if flt.overdue
            else (Q(next_due_at__gt=now) | Q(next_due_at__isnull=True))
        )
    if flt.due_before:
        q &= Q(next_due_at__lte=flt.due_before)
    return q


async def _page(base: Q, cursor: str | None, limit: int) -> list[Case]:
    phase, due, ident = _decode(cursor) if cursor else ("d", None, 0)
    rows: list[Case] = []
    if phase == "d":
        after = Q(next_due_at__isnull=False)
        if due is not None:
            after &= Q(next_due_at__gt=due) | Q(next_due_at=due, id__gt=ident)
        rows = await Case.filter(base & after).order_by("next_due_at", "id").limit(limit + 1)
        ident = 0
    if len(rows) <= limit:
        rest = Q(next_due_at__isnull=True) & (Q(id__lt=ident) if ident else Q())
        rows += await Case.filter(base & rest).order_by("-id").limit(limit + 1 - len(rows))
    return rows


async def inbox(user: StaffUser, flt: InboxFilter) -> dict[str, Any]:
    permissions.require(user, permissions.CASE_VIEW)
    unit = await Unit.get(id=user.unit_id)
    scope = permissions.case_scope(user, unit.path)
    if flt.unit_code and not (
        fits(Unit, "code", flt.unit_code)
        and await Unit.filter(code=flt.unit_code, path__startswith=unit.path).exists()
    ):
        raise field_error("unit", "只能查看本单位及下级单位")
    rows = await _page(await _filters(user, scope, flt), flt.cursor, flt.limit)
    page, more = rows[: flt.limit], len(rows) > flt.limit
    counts = (
        await Case.filter(scope).annotate(n=Count("id")).group_by("status").values("status", "n")
    )
    return {
        "items": [staff_summary(c) for c in page],
        "next_cursor": _encode(page[-1]) if more and page else None,
        "counts": {row["status"]: row["n"] for row in counts},
    }
