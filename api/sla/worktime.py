"""Working-time arithmetic on the official Chinese calendar, in Asia/Shanghai.

Time limits (DOMAIN.md "Time limits") are natural time (签收 within 2 hours, 24/7) or working
time (reply within 5 working days). This module is pure: no clock, no database; the admin
override table and the "calendar missing" alert hook are passed in by the caller.

Semantics:

- ``natural_*``: absolute elapsed time; ``natural_days`` are 24 h each.
- ``working_hours``: only office hours on workdays count. A start outside office hours counts
  from the next opening; an amount that uses a period up exactly ends at that period's end
  (12:00, 17:30), not at the next opening. Amount 0 returns the start unchanged (no snapping).
- ``working_days``: "working-day limits end at the close of the Nth working day after the day of
  receipt" (DOMAIN.md). The day of receipt is day 0, whatever the hour and whether or not it is
  a workday. A fraction ``k + f`` (0 < f < 1) ends ``f`` × (office hours per day) of working
  hours after the close of day k, i.e. inside workday k + 1: Monday 10:00 + 0.5 = Tuesday 11:45.
- Amounts are quantised to whole microseconds (of elapsed time, or of office time) with exact
  rational arithmetic, so there is no float drift.
- Negative amounts: allowed for natural units; ``ValueError`` for working units (deadlines only
  move forward). ``working_time_between(a, b)`` for ``b < a`` is ``-working_time_between(b, a)``.
- ``add(a, between(a, b)) <= b`` always, equal when ``b`` is reachable from ``a`` (a result of
  ``add(a, x)``); ``between(a, add(a, x)) == x``. Working-day time only starts counting at the
  close of the day of receipt, so ``between`` is 0 until then.
- Additivity ``add(add(t, x), y) == add(t, x + y)`` holds for working hours always, and for
  working days when ``x`` is whole: a result in the middle of a day counts as that whole day.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from functools import lru_cache
from itertools import pairwise
from types import MappingProxyType
from zoneinfo import ZoneInfo

import chinese_calendar

SHANGHAI = ZoneInfo("Asia/Shanghai")
UNITS = (
    "natural_seconds",
    "natural_minutes",
    "natural_hours",
    "natural_days",
    "working_days",
    "working_hours",
)

log = logging.getLogger("pingyi.calendar")

_SECOND_US = 1_000_000
_HOUR_US = 3600 * _SECOND_US
_DAY_US = 24 * _HOUR_US
_NATURAL_US = {
    "natural_seconds": _SECOND_US,
    "natural_minutes": 60 * _SECOND_US,
    "natural_hours": _HOUR_US,
    "natural_days": _DAY_US,
}
_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class OfficeHours:
    """Office periods of a workday, in order; the default is the usual government day."""

    periods: tuple[tuple[time, time], ...] = (
        (time(8, 30), time(12, 0)),
        (time(14, 30), time(17, 30)),
    )

    def __post_init__(self) -> None:
        if not self.periods:
            raise ValueError("office hours need at least one period")
        if any(a >= b for a, b in self.periods) or any(
            prev[1] > nxt[0] for prev, nxt in pairwise(self.periods)
        ):
            raise ValueError("office periods must be non-empty, ordered and not overlap")

    @property
    def close(self) -> time:
        return self.periods[-1][1]


class WorkCalendar:
    """Which days are workdays: admin overrides, then chinesecalendar, then Monday–Friday."""

    def __init__(
        self,
        *,
        overrides: Mapping[date, bool] | None = None,
        office_hours: OfficeHours | None = None,
        on_unknown_year: Callable[[int], None] | None = None,
    ) -> None:
        # A snapshot: when the override table changes, the caller builds a new calendar.
        self._overrides = MappingProxyType(dict(overrides or {}))
        self._office_hours = office_hours or OfficeHours()
        self._on_unknown_year = on_unknown_year
        self._lock = threading.Lock()
        self.unknown_years: set[int] = set()

    @property
    def office_hours(self) -> OfficeHours:
        return self._office_hours

    def is_workday(self, day: date) -> bool:
        if isinstance(day, datetime):
            # A datetime would silently miss the override table (keys are dates).
            raise TypeError("is_workday takes a date, not a datetime")
        if day in self._overrides:
            return self._overrides[day]
        official = _official_workday(day)
        if official is None:
            self._note_unknown_year(day.year)
            return day.weekday() < 5
        return official

    def _note_unknown_year(self, year: int) -> None:
        with self._lock:
            if year in self.unknown_years:
                return
            self.unknown_years.add(year)
        log.warning(
            "chinesecalendar has no schedule for %d: falling back to Monday–Friday; "
            "enter the State Council holidays as overrides",
            year,
        )
        if self._on_unknown_year is not None:
            self._on_unknown_year(year)


def official_year_known(year: int) -> bool:
    """Whether chinesecalendar carries the State Council schedule for ``year``."""
    return all(_official_workday(date(year, m, d)) is not None for m, d in ((1, 1), (12, 31)))


@lru_cache(maxsize=8192)
def _official_workday(day: date) -> bool | None:
    """The State Council schedule, or None for a year chinesecalendar does not know.

    Cached because the package takes ~40 µs a lookup and deadlines walk day by day.
    """
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        # The package only knows the years already published (PITFALLS.md: 2004–2026).
        return None


def add_working_time(start: datetime, amount: float, unit: str, calendar: WorkCalendar) -> datetime:
    """The moment ``amount`` ``unit`` after ``start``, in Asia/Shanghai (see module doc)."""
    _check_unit(unit)
    start = _local(start)
    if unit in _NATURAL_US:
        delta = timedelta(microseconds=_quantise(amount, _NATURAL_US[unit]))
        return (start.astimezone(UTC) + delta).astimezone(SHANGHAI)
    if amount < 0:
        raise ValueError("working time cannot be negative")
    if unit == "working_hours":
        return _add_office(start, _quantise(amount, _HOUR_US), calendar)
    return _add_working_days(start, _quantise(amount, _day_us(calendar)), calendar)


def working_time_between(a: datetime, b: datetime, unit: str, calendar: WorkCalendar) -> float:
    """The amount x with ``add_working_time(a, x, unit) == b`` when b is reachable from a.

    For an unreachable b it is the time counted so far (``add(a, x)`` is then the last reachable
    moment at or before b); for ``b < a`` it is ``-working_time_between(b, a)``.
    """
    _check_unit(unit)
    a, b = _local(a), _local(b)
    if b < a:
        return -working_time_between(b, a, unit, calendar)
    if unit in _NATURAL_US:
        return ((b - a) // timedelta(microseconds=1)) / _NATURAL_US[unit]
    if unit == "working_hours":
        return _office_between(a, b, calendar) / _HOUR_US
    return _working_days_between(a, b, calendar) / _day_us(calendar)


def next_working_moment(t: datetime, calendar: WorkCalendar) -> datetime:
    """``t`` if it is within office hours [open, close) of a workday, else the next opening."""
    t = _local(t)
    day, position = t.date(), _time_us(t.timetz())
    while True:
        if calendar.is_workday(day):
            for open_, close in _bounds(calendar.office_hours):
                if position < close:
                    return t if position >= open_ else _at(day, open_)
        day, position = day + _ONE_DAY, 0


def _add_office(start: datetime, us: int, calendar: WorkCalendar) -> datetime:
    """Spend ``us`` microseconds of office time from ``start``, one day at a time."""
    if us == 0:
        return start
    day, position = start.date(), _time_us(start.timetz())
    while True:
        if calendar.is_workday(day):
            for open_, close in _bounds(calendar.office_hours):
                begin = max(position, open_)
                if begin >= close:
                    continue
                if us <= close - begin:  # "<=": ending exactly at a close stays there
                    return _at(day, begin + us)
                us -= close - begin
        day, position = day + _ONE_DAY, 0


def _add_working_days(start: datetime, us: int, calendar: WorkCalendar) -> datetime:
    if us == 0:
        return start
    whole, rest = divmod(us, _day_us(calendar))
    day = start.date()  # day of receipt = day 0
    for _ in range(whole):
        day = _next_workday(day, calendar)
    close = _at(day, _time_us(calendar.office_hours.close))
    return _add_office(close, rest, calendar)


def _office_between(a: datetime, b: datetime, calendar: WorkCalendar) -> int:
    """Microseconds of office time in [a, b], a <= b."""
    total, day = 0, a.date()
    while day <= b.date():
        if calendar.is_workday(day):
            low = _time_us(a.timetz()) if day == a.date() else 0
            high = _time_us(b.timetz()) if day == b.date() else _DAY_US
            for open_, close in _bounds(calendar.office_hours):
                total += max(0, min(close, high) - max(open_, low))
        day += _ONE_DAY
    return total


def _working_days_between(a: datetime, b: datetime, calendar: WorkCalendar) -> int:
    """Microseconds of working-day time from a to b: whole days between closes, then office time.

    The count starts at the close of the day of receipt, as in ``_add_working_days``.
    """
    whole, anchor_day, day = 0, a.date(), a.date() + _ONE_DAY
    while day < b.date():
        if calendar.is_workday(day):
            whole, anchor_day = whole + 1, day
        day += _ONE_DAY
    anchor = _at(anchor_day, _time_us(calendar.office_hours.close))
    rest = _office_between(anchor, b, calendar) if anchor < b else 0
    return whole * _day_us(calendar) + rest


def _next_workday(day: date, calendar: WorkCalendar) -> date:
    day += _ONE_DAY
    while not calendar.is_workday(day):
        day += _ONE_DAY
    return day


@lru_cache(maxsize=32)
def _bounds(hours: OfficeHours) -> tuple[tuple[int, int], ...]:
    return tuple((_time_us(a), _time_us(b)) for a, b in hours.periods)


def _day_us(calendar: WorkCalendar) -> int:
    """One working day in microseconds of office time (6.5 h by default)."""
    return sum(close - open_ for open_, close in _bounds(calendar.office_hours))


def _time_us(t: time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * _SECOND_US + t.microsecond


def _at(day: date, us: int) -> datetime:
    # Shanghai has had no DST since 1991, so wall-clock offsets are absolute offsets.
    return datetime.combine(day, time(), tzinfo=SHANGHAI) + timedelta(microseconds=us)


def _local(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("naive datetime: working time needs an aware datetime")
    return t.astimezone(SHANGHAI)


def _quantise(amount: float, unit_us: int) -> int:
    """``amount`` units as whole microseconds, exactly (Fraction of the float, then round)."""
    if not math.isfinite(amount):
        raise ValueError(f"amount must be finite, not {amount!r}")
    return round(Fraction(amount) * unit_us)


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unknown time unit {unit!r}; expected one of {UNITS}")
