"""Province administration of the working-day calendar: the override table (DOMAIN.md).

The effective status of a date is, in order: the admin's override, the State Council schedule
(chinesecalendar), or the Monday–Friday fallback for a year the package does not know. A change
drops this process's calendar cache at once (``Services.forget_calendars``); other processes (the
worker) rebuild theirs within a minute. Deadlines already computed are not moved.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from api.errors import NotFound
from api.models import CalendarOverride, StaffUser
from api.schemas import CalendarOverrideSet
from api.services import permissions
from api.services.context import Services
from api.sla.worktime import _official_workday
from api.validation import field_error

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
YEARS = (2000, 2100)


def parse_date(raw: str) -> date:
    """A path date, strictly YYYY-MM-DD and a real day (422 naming ``date`` otherwise)."""
    if not _DATE.fullmatch(raw):
        raise field_error("date", "应为 YYYY-MM-DD 格式的日期")
    try:
        day = date.fromisoformat(raw)
    except ValueError as exc:
        raise field_error("date", "日期不存在") from exc
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise field_error("date", f"年份应在 {YEARS[0]}–{YEARS[1]} 之间")
    return day


def year_known(year: int) -> bool:
    return _official_workday(date(year, 1, 1)) is not None


def _entry(day: date, override: CalendarOverride | None) -> dict[str, Any]:
    if override is not None:
        return {
            "date": day.isoformat(),
            "is_workday": override.is_workday,
            "source": "override",
            "note": override.note,
        }
    official = _official_workday(day)
    return {
        "date": day.isoformat(),
        "is_workday": day.weekday() < 5 if official is None else official,
        "source": "fallback" if official is None else "official",
        "note": "",
    }


async def year_view(user: StaffUser, year: int) -> dict[str, Any]:
    """Every date of ``year`` with its effective status and where that comes from."""
    permissions.require(user, permissions.CALENDAR_MANAGE)
    first, last = date(year, 1, 1), date(year, 12, 31)
    overrides = {
        o.date: o
        for o in await CalendarOverride.filter(date__gte=first, date__lte=last).order_by("date")
    }
    days, day = [], first
    while day <= last:
        days.append(_entry(day, overrides.get(day)))
        day += timedelta(days=1)
    return {
        "year": year,
        "known": year_known(year),
        "overrides": [_entry(d, o) for d, o in sorted(overrides.items())],
        "days": days,
    }


async def set_override(
    services: Services, user: StaffUser, day: date, body: CalendarOverrideSet
) -> dict[str, Any]:
    permissions.require(user, permissions.CALENDAR_MANAGE)
    override, _ = await CalendarOverride.update_or_create(
        date=day, defaults={"is_workday": body.is_workday, "note": body.note}
    )
    services.forget_calendars()
    return _entry(day, override)


async def delete_override(services: Services, user: StaffUser, day: date) -> dict[str, Any]:
    permissions.require(user, permissions.CALENDAR_MANAGE)
    deleted = await CalendarOverride.filter(date=day).delete()
    if not deleted:
        raise NotFound("该日期没有人工调整", code="override_not_found")
    services.forget_calendars()
    return _entry(day, None)
