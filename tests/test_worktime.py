"""Working-time arithmetic: properties over 2024–2026, and the 2025 calendar at its edges.

Calendar facts come from TEST-VECTORS.md (2025) and chinesecalendar 1.11.0 (2026).
"""

from __future__ import annotations

import logging
import time as clock
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.sla.worktime import (
    SHANGHAI,
    UNITS,
    OfficeHours,
    WorkCalendar,
    add_working_time,
    next_working_moment,
    working_time_between,
)

CAL = WorkCalendar()
WORKING = ("working_hours", "working_days")
# database=None: no .hypothesis directory written into the shared tree.
PROPERTY = settings(max_examples=200, deadline=None, database=None)

moments = st.datetimes(
    min_value=datetime(2024, 1, 1),
    max_value=datetime(2026, 11, 30, 23, 59, 59),
    timezones=st.just(SHANGHAI),
)
# Multiples of 1/16 are exact in binary and whole microseconds of office time (6.5 h / 16),
# so sums of amounts are exact and additivity can be asserted with ==.
hours = st.integers(0, 16 * 40).map(lambda k: k / 16)
days = st.integers(0, 16 * 12).map(lambda k: k / 16)
whole_days = st.integers(0, 12).map(float)
AMOUNTS = {"working_hours": hours, "working_days": days}


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=SHANGHAI)


def add(start: datetime, amount: float, unit: str, calendar: WorkCalendar = CAL) -> datetime:
    return add_working_time(start, amount, unit, calendar)


def between(a: datetime, b: datetime, unit: str) -> float:
    return working_time_between(a, b, unit, CAL)


def in_office(t: datetime, calendar: WorkCalendar = CAL) -> bool:
    """Inside (open, close] of a period on a workday: where a positive amount can end."""
    local = t.astimezone(SHANGHAI)
    periods = calendar.office_hours.periods
    clock_time = local.time()
    return calendar.is_workday(local.date()) and any(a < clock_time <= b for a, b in periods)


def amount_pair(unit: str) -> st.SearchStrategy[tuple[float, float]]:
    return st.tuples(AMOUNTS[unit], AMOUNTS[unit]).map(lambda p: (min(p), max(p)))


# --- properties ------------------------------------------------------------------------------


@PROPERTY
@given(t=moments, unit=st.sampled_from(WORKING), data=st.data())
def test_monotonic_in_amount(t: datetime, unit: str, data: st.DataObject) -> None:
    x, y = data.draw(amount_pair(unit))
    assert add(t, x, unit) <= add(t, y, unit)


@PROPERTY
@given(t1=moments, t2=moments, unit=st.sampled_from(UNITS), data=st.data())
def test_monotonic_in_start(t1: datetime, t2: datetime, unit: str, data: st.DataObject) -> None:
    t1, t2 = sorted((t1, t2))
    x = data.draw(AMOUNTS.get(unit, hours))
    assert add(t1, x, unit) <= add(t2, x, unit)


@PROPERTY
@given(t=moments, x=hours, y=hours)
def test_working_hours_additive(t: datetime, x: float, y: float) -> None:
    unit = "working_hours"
    assert add(add(t, x, unit), y, unit) == add(t, x + y, unit)


@PROPERTY
@given(t=moments, x=whole_days, y=days)
def test_working_days_additive(t: datetime, x: float, y: float) -> None:
    unit = "working_days"
    assert add(add(t, x, unit), y, unit) == add(t, x + y, unit)


@PROPERTY
@given(t=moments, unit=st.sampled_from(UNITS), data=st.data())
def test_between_inverts_add(t: datetime, unit: str, data: st.DataObject) -> None:
    x = data.draw(AMOUNTS.get(unit, hours))
    end = add(t, x, unit)
    assert between(t, end, unit) == x
    assert add(t, between(t, end, unit), unit) == end


@PROPERTY
@given(t=moments, unit=st.sampled_from(UNITS), x=st.floats(0, 300))
def test_round_trip_without_float_drift(t: datetime, unit: str, x: float) -> None:
    end = add(t, x, unit)
    assert add(t, between(t, end, unit), unit) == end


@PROPERTY
@given(a=moments, b=moments, unit=st.sampled_from(UNITS))
def test_between_any_pair(a: datetime, b: datetime, unit: str) -> None:
    assert between(b, a, unit) == -between(a, b, unit)
    a, b = sorted((a, b))
    assert between(a, b, unit) >= 0
    # The amount counted so far never overshoots: add lands on the last reachable moment <= b.
    assert add(a, between(a, b, unit), unit) <= b


@PROPERTY
@given(t=moments, x=hours)
def test_working_hours_end_inside_office_hours(t: datetime, x: float) -> None:
    end = add(t, x, "working_hours")
    assert end == t if x == 0 else in_office(end)
    assert end.tzinfo is SHANGHAI


@PROPERTY
@given(t=moments, n=st.integers(1, 12))
def test_whole_working_days_end_at_close_of_nth_workday(t: datetime, n: int) -> None:
    end = add(t, n, "working_days")
    assert end.time() == time(17, 30) and CAL.is_workday(end.date())
    span = (end.date() - t.date()).days
    counted = [t.date() + timedelta(days=i) for i in range(1, span + 1)]
    assert sum(CAL.is_workday(d) for d in counted) == n


@PROPERTY
@given(t=moments)
def test_next_working_moment(t: datetime) -> None:
    moment = next_working_moment(t, CAL)
    assert moment >= t and CAL.is_workday(moment.date())
    assert any(a <= moment.time() < b for a, b in CAL.office_hours.periods)
    assert moment == t or moment.time() in (time(8, 30), time(14, 30))


# --- the same properties on a fallback year and with the admin's override rows ----------------
#
# 2027 is unknown to chinesecalendar 1.11.0: Monday–Friday is used (and the year reported once
# per calendar). Overrides are drawn afresh per example, across 2025–2027, so they land on
# holidays, 调休 Saturdays, fallback weekdays and year ends alike. Working-day additivity is
# asserted, as above and as the module documents it, only for a whole first amount: a result in
# the middle of a day counts as that whole day, so ``add(add(t, 0.5), 0.5)`` need not equal
# ``add(t, 1)``.

fallback_moments = st.datetimes(
    min_value=datetime(2027, 1, 1),
    max_value=datetime(2027, 11, 30, 23, 59, 59),
    timezones=st.just(SHANGHAI),
)
override_rows = st.dictionaries(
    st.dates(date(2025, 1, 1), date(2027, 12, 31)), st.booleans(), max_size=40
)


def _quiet(year: int) -> None:
    """The unknown-year hook; the alert itself is tested in tests/test_calendar_gap.py."""


def _calendar(overrides: dict[date, bool]) -> WorkCalendar:
    return WorkCalendar(overrides=overrides, on_unknown_year=_quiet)


FALLBACK = _calendar({})
calendars = st.one_of(
    st.tuples(st.just(FALLBACK), fallback_moments),
    st.tuples(override_rows.map(_calendar), st.one_of(moments, fallback_moments)),
)


@PROPERTY
@given(case=calendars, unit=st.sampled_from(WORKING), data=st.data())
def test_other_calendars_monotonic(
    case: tuple[WorkCalendar, datetime], unit: str, data: st.DataObject
) -> None:
    cal, t = case
    x, y = data.draw(amount_pair(unit))
    assert add(t, x, unit, cal) <= add(t, y, unit, cal)
    later = t + timedelta(minutes=data.draw(st.integers(0, 60 * 24 * 20)))
    assert add(t, x, unit, cal) <= add(later, x, unit, cal)


@PROPERTY
@given(case=calendars, x=hours, y=hours)
def test_other_calendars_working_hours_additive(
    case: tuple[WorkCalendar, datetime], x: float, y: float
) -> None:
    cal, t = case
    unit = "working_hours"
    assert add(add(t, x, unit, cal), y, unit, cal) == add(t, x + y, unit, cal)


@PROPERTY
@given(case=calendars, x=whole_days, y=days)
def test_other_calendars_working_days_additive_for_a_whole_first_amount(
    case: tuple[WorkCalendar, datetime], x: float, y: float
) -> None:
    cal, t = case
    unit = "working_days"
    assert add(add(t, x, unit, cal), y, unit, cal) == add(t, x + y, unit, cal)


@PROPERTY
@given(case=calendars, unit=st.sampled_from(WORKING), data=st.data())
def test_other_calendars_between_agrees_with_add(
    case: tuple[WorkCalendar, datetime], unit: str, data: st.DataObject
) -> None:
    cal, t = case
    x = data.draw(AMOUNTS[unit])
    end = add(t, x, unit, cal)
    assert working_time_between(t, end, unit, cal) == x
    other = t + timedelta(minutes=data.draw(st.integers(-60 * 24 * 30, 60 * 24 * 30)))
    a, b = sorted((t, other))
    counted = working_time_between(a, b, unit, cal)
    assert counted >= 0 and working_time_between(b, a, unit, cal) == -counted
    assert add(a, counted, unit, cal) <= b


@PROPERTY
@given(case=calendars, n=st.integers(1, 12))
def test_other_calendars_whole_days_end_at_close_of_nth_workday(
    case: tuple[WorkCalendar, datetime], n: int
) -> None:
    cal, t = case
    end = add(t, n, "working_days", cal)
    assert end.time() == time(17, 30) and cal.is_workday(end.date())
    span = (end.date() - t.date()).days
    counted = [t.date() + timedelta(days=i) for i in range(1, span + 1)]
    assert sum(cal.is_workday(d) for d in counted) == n
    assert in_office(add(t, n / 2 + 1 / 16, "working_hours", cal), cal)


def test_fallback_year_is_monday_to_friday_and_overrides_win() -> None:
    assert [FALLBACK.is_workday(date(2027, 3, d)) for d in range(1, 8)] == [True] * 5 + [False] * 2
    cal = _calendar({date(2027, 3, 6): True, date(2027, 3, 3): False})  # a Saturday, a Wednesday
    assert add(at(2027, 3, 2, 10), 2, "working_days", cal) == at(2027, 3, 5, 17, 30)
    assert add(at(2027, 3, 4, 10), 2, "working_days", cal) == at(2027, 3, 6, 17, 30)


# --- office hours at their edges -------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "amount", "expected"),
    [
        (at(2025, 3, 3, 17, 30), 1, at(2025, 3, 4, 9, 30)),  # at close: next morning
        (at(2025, 3, 3, 16, 30), 1, at(2025, 3, 3, 17, 30)),  # ends at close, stays there
        (at(2025, 3, 3, 11, 0), 1, at(2025, 3, 3, 12, 0)),  # ends at lunch, stays there
        (at(2025, 3, 3, 12, 30), 1, at(2025, 3, 3, 15, 30)),  # inside lunch
        (at(2025, 3, 3, 7, 0), 6.5, at(2025, 3, 3, 17, 30)),  # a whole day from before opening
        (at(2025, 3, 3, 10, 0), 0.25, at(2025, 3, 3, 10, 15)),
        (at(2025, 3, 7, 17, 0), 1, at(2025, 3, 10, 9, 0)),  # over a weekend
        (at(2025, 3, 8, 10, 0), 0, at(2025, 3, 8, 10, 0)),  # zero: no snapping
    ],
)
def test_working_hours_examples(start: datetime, amount: float, expected: datetime) -> None:
    assert add(start, amount, "working_hours") == expected


def test_working_hours_between_skips_lunch_and_nights() -> None:
    assert between(at(2025, 3, 3, 10, 0), at(2025, 3, 4, 10, 0), "working_hours") == 6.5
    assert between(at(2025, 3, 3, 17, 30), at(2025, 3, 4, 8, 30), "working_hours") == 0
    assert between(at(2025, 3, 3, 12, 0), at(2025, 3, 3, 14, 30), "working_hours") == 0


def test_next_working_moment_examples() -> None:
    assert next_working_moment(at(2025, 3, 3, 10), CAL) == at(2025, 3, 3, 10)
    assert next_working_moment(at(2025, 3, 3, 12), CAL) == at(2025, 3, 3, 14, 30)
    assert next_working_moment(at(2025, 3, 7, 17, 30), CAL) == at(2025, 3, 10, 8, 30)
    assert next_working_moment(at(2025, 2, 8, 7), CAL) == at(2025, 2, 8, 8, 30)  # 调休 Saturday


# --- working days on the 2025 calendar -------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "n", "expected"),
    [
        (at(2025, 3, 3, 10), 5, at(2025, 3, 10, 17, 30)),  # DOMAIN example
        (at(2025, 3, 3, 17, 45), 1, at(2025, 3, 4, 17, 30)),  # after hours: still day 0
        (at(2025, 3, 8, 10), 1, at(2025, 3, 10, 17, 30)),  # received on a weekend
        (at(2025, 1, 24, 10), 1, at(2025, 1, 26, 17, 30)),  # Sun 1/26 is a workday
        (at(2025, 1, 26, 10), 1, at(2025, 1, 27, 17, 30)),
        (at(2025, 1, 27, 10), 1, at(2025, 2, 5, 17, 30)),  # Spring Festival 1/28–2/4
        (at(2025, 1, 30, 10), 1, at(2025, 2, 5, 17, 30)),  # received during the holiday
        (at(2025, 2, 7, 10), 1, at(2025, 2, 8, 17, 30)),  # Sat 2/8 is a workday
        (at(2025, 2, 8, 10), 1, at(2025, 2, 10, 17, 30)),
        (at(2025, 4, 3, 10), 1, at(2025, 4, 7, 17, 30)),  # Qingming 4/4–4/6
        (at(2025, 4, 25, 10), 1, at(2025, 4, 27, 17, 30)),  # Sun 4/27 is a workday
        (at(2025, 4, 28, 10), 5, at(2025, 5, 8, 17, 30)),  # May Day 5/1–5/5
        (at(2025, 5, 30, 10), 1, at(2025, 6, 3, 17, 30)),  # Dragon Boat 5/31–6/2
        (at(2025, 9, 26, 10), 1, at(2025, 9, 28, 17, 30)),  # Sun 9/28 is a workday
        (at(2025, 9, 30, 10), 1, at(2025, 10, 9, 17, 30)),  # National Day 10/1–10/8
        (at(2025, 10, 9, 10), 2, at(2025, 10, 11, 17, 30)),  # Sat 10/11 is a workday
        (at(2025, 12, 31, 10), 1, at(2026, 1, 4, 17, 30)),  # 2026: 1/1–1/3 off, Sun 1/4 works
    ],
)
def test_working_days_examples(received: datetime, n: int, expected: datetime) -> None:
    assert add(received, n, "working_days") == expected
    assert between(received, expected, "working_days") == n


def test_spring_festival_working_hours() -> None:
    assert add(at(2025, 1, 27, 16, 30), 2, "working_hours") == at(2025, 2, 5, 9, 30)
    assert add(at(2025, 1, 26, 10), 8, "working_hours") == at(2025, 1, 27, 11, 30)


def test_fractional_working_days() -> None:
    monday = at(2025, 3, 3, 10)
    # Day of receipt is day 0; a fraction runs on from that day's close: 0.5 × 6.5 h = 3 h 15.
    assert add(monday, 0.5, "working_days") == at(2025, 3, 4, 11, 45)
    assert add(monday, 1.5, "working_days") == at(2025, 3, 5, 11, 45)
    assert between(monday, at(2025, 3, 5, 11, 45), "working_days") == 1.5
    assert between(monday, at(2025, 3, 3, 15), "working_days") == 0  # day 0 does not count


def test_b_before_a_is_negative() -> None:
    a, b = at(2025, 3, 3, 10), at(2025, 3, 10, 17, 30)
    assert between(b, a, "working_days") == -5
    assert between(b, a, "natural_days") == -(7 + 7.5 / 24)


# --- unknown years and overrides -------------------------------------------------------------


def test_unknown_year_falls_back_to_monday_friday(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []
    calendar = WorkCalendar(on_unknown_year=seen.append)
    with caplog.at_level(logging.WARNING, logger="pingyi.calendar"):
        assert calendar.is_workday(date(2027, 1, 1))  # a Friday: no holiday data, so it works
        assert not calendar.is_workday(date(2027, 1, 2))
        for _ in range(20):
            calendar.is_workday(date(2027, 3, 3))
        end = add(at(2027, 1, 8, 10), 1, "working_days", calendar)
    assert end == at(2027, 1, 11, 17, 30)
    assert seen == [2027] and calendar.unknown_years == {2027}
    warnings = [r for r in caplog.records if r.name == "pingyi.calendar"]
    assert len(warnings) == 1 and "2027" in warnings[0].getMessage()


def test_known_year_never_reports() -> None:
    seen: list[int] = []
    calendar = WorkCalendar(on_unknown_year=seen.append)
    add(at(2025, 1, 1), 100, "working_days", calendar)
    assert seen == [] and calendar.unknown_years == set()


def test_overrides_take_precedence() -> None:
    calendar = WorkCalendar(
        overrides={date(2025, 3, 4): False, date(2025, 3, 8): True, date(2027, 1, 1): False}
    )
    assert add(at(2025, 3, 3, 10), 1, "working_days", calendar) == at(2025, 3, 5, 17, 30)
    assert add(at(2025, 3, 7, 10), 1, "working_days", calendar) == at(2025, 3, 8, 17, 30)
    assert not calendar.is_workday(date(2027, 1, 1))
    assert calendar.unknown_years == set()  # answered by the override, not the fallback


def test_custom_office_hours() -> None:
    calendar = WorkCalendar(office_hours=OfficeHours(periods=((time(9), time(17)),)))
    assert calendar.office_hours.close == time(17)
    assert add(at(2025, 3, 3, 10), 1, "working_days", calendar) == at(2025, 3, 4, 17)
    assert add(at(2025, 3, 3, 10), 0.5, "working_days", calendar) == at(2025, 3, 4, 13)
    with pytest.raises(ValueError):
        OfficeHours(periods=((time(14), time(12)),))
    with pytest.raises(ValueError):
        OfficeHours(periods=((time(8), time(12)), (time(11), time(17))))


# --- natural time and bad input --------------------------------------------------------------


def test_natural_hours_across_midnight() -> None:
    assert add(at(2025, 3, 3, 23), 2, "natural_hours") == at(2025, 3, 4, 1)
    assert add(at(2025, 1, 28, 23), 1, "natural_days") == at(2025, 1, 29, 23)  # holidays count


def test_results_are_in_shanghai() -> None:
    utc_start = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    for unit in UNITS:
        assert add(utc_start, 1, unit).tzinfo is SHANGHAI
    assert add(utc_start, 1, "working_hours") == at(2025, 3, 3, 11)


@pytest.mark.parametrize("unit", UNITS)
def test_naive_datetime_rejected(unit: str) -> None:
    with pytest.raises(ValueError, match="naive"):
        add_working_time(datetime(2025, 3, 3, 10), 1, unit, CAL)
    with pytest.raises(ValueError, match="naive"):
        working_time_between(datetime(2025, 3, 3), at(2025, 3, 4), unit, CAL)


@pytest.mark.parametrize(
    ("amount", "unit"),
    [(-1, "working_hours"), (-0.5, "working_days"), (float("nan"), "natural_hours"), (1, "weeks")],
)
def test_bad_amount_or_unit_rejected(amount: float, unit: str) -> None:
    with pytest.raises(ValueError):
        add(at(2025, 3, 3, 10), amount, unit)


def test_five_working_days_is_fast() -> None:
    started = clock.perf_counter()
    for i in range(1000):
        add(at(2025, 1, 1) + timedelta(hours=7 * i), 5, "working_days")
    assert clock.perf_counter() - started < 2
