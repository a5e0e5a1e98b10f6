"""The admin alert for a year chinesecalendar does not know (issue 3, "Working time").

DOMAIN.md: "alert when next year is missing". The worker checks at start and every day whether
next year (today's year + 1 in China time) is known to the package or entered by an admin in the
override table; a deadline that reaches into an unknown year notes that year too. Either way the
year becomes a ``calendar_gap`` row — the durable record behind the ``/healthz`` flag, whichever
process found it — and the alert SMS to the province unit's ``leader_phone`` is written through the
outbox in the same transaction that marks the row alerted, under the row's lock: exactly once
across workers and restarts, Redis or not. While no province phone is configured the alert is
retried (every minute or so) and the log and ``/healthz`` flag stand in for it.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import TYPE_CHECKING

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from api import clock
from api.models import CalendarGap, CalendarOverride, SmsOutbox, Unit
from api.services.outbox import enqueue_sms
from api.sla.worktime import official_year_known

if TYPE_CHECKING:
    from api.services.context import Services

log = logging.getLogger("pingyi.calendar")

TEMPLATE = "calendar_alert"


def purpose(year: int) -> str:
    return f"{TEMPLATE}:{year}"


async def year_known(year: int) -> bool:
    """The package knows the year, or an administrator entered its schedule as overrides (any
    override dated in that year counts: the State Council schedule is entered as a whole)."""
    if official_year_known(year):
        return True
    overrides = CalendarOverride.filter(date__gte=date(year, 1, 1), date__lte=date(year, 12, 31))
    return await overrides.exists()


async def check_next_year(services: Services) -> bool:
    """The daily check: next year's gap noted and its alert written (once). False while the
    alert could not be written yet (no province phone, the database busy): check again soon."""
    year = clock.to_china(clock.now()).year + 1
    if await year_known(year):
        return True
    log.warning("calendar: next year (%s) is unknown to chinesecalendar and the overrides", year)
    return await raise_alert(services, year)


async def open_gaps() -> list[CalendarGap]:
    """The noted years still unknown (one since entered or covered by a newer package is not)."""
    return [
        gap for gap in await CalendarGap.all().order_by("year") if not await year_known(gap.year)
    ]


async def raise_alert(services: Services, year: int) -> bool:
    """Notes the gap and writes its alert SMS unless written; True once it is. Never raises."""
    try:
        settled = await _raise(services, year)
    except Exception:  # a background task: log, retry on a later check
        log.exception("calendar alert for %s not written; will retry", year)
        return False
    if settled:
        services.alert_settled(year)
    return settled


async def _raise(services: Services, year: int) -> bool:
    now = clock.now()
    await CalendarGap.bulk_create([CalendarGap(year=year, detected_at=now)], ignore_conflicts=True)
    async with in_transaction() as conn:
        # The row lock makes two workers noting the year at once take turns: one writes the SMS.
        gap = await CalendarGap.filter(year=year).select_for_update().using_db(conn).get()
        if gap.alerted_at is not None:
            return True
        # Written before the gap table existed: the outbox row is the record.
        if await SmsOutbox.filter(purpose=purpose(year)).using_db(conn).exists():
            return await _mark_alerted(gap, now, conn)
        province = await Unit.all().using_db(conn).order_by("path").first()  # "43/" first
        if province is None or not province.leader_phone:
            log.warning("calendar alert for %s: the province unit has no leader_phone", year)
            return False
        await enqueue_sms(
            services,
            phone=province.leader_phone,
            template=TEMPLATE,
            params={"year": year},
            purpose=purpose(year),
            conn=conn,
        )
        log.warning("calendar alert for %s queued to the province leader", year)
        return await _mark_alerted(gap, now, conn)


async def _mark_alerted(gap: CalendarGap, now: datetime, conn: BaseDBAsyncClient) -> bool:
    gap.alerted_at = now
    await gap.save(using_db=conn, update_fields=["alerted_at"])
    return True
