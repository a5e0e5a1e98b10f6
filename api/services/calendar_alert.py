"""The admin alert for a year chinesecalendar does not know (issue 3, "Working time").

Once per year across processes and restarts: the alert's own outbox row (purpose
``calendar_alert:<year>``) is the durable record, checked before writing; a short Redis lease
(``SET NX EX``) keeps two processes from writing it at the same moment. Losing Redis loses
nothing: the row is still there, so the alert is never sent twice. The SMS goes to the province
unit's ``leader_phone``; while none is configured the alert is retried every minute or so (on
the next ``Services.calendar()`` call) and the log and ``/healthz`` flag stand in for it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from api.models import SmsOutbox, Unit
from api.services.outbox import enqueue_sms

if TYPE_CHECKING:
    from api.services.context import Services

log = logging.getLogger("pingyi.calendar")

TEMPLATE = "calendar_alert"
LEASE_SECONDS = 60


def purpose(year: int) -> str:
    return f"{TEMPLATE}:{year}"


async def raise_alert(services: Services, year: int) -> None:
    """Writes the alert SMS for ``year`` unless it exists; never raises."""
    try:
        if await _raise(services, year):
            services.alert_settled(year)
    except Exception:  # a background task: log, retry on a later calendar() call
        log.exception("calendar alert for %s not written; will retry", year)


async def _raise(services: Services, year: int) -> bool:
    if await SmsOutbox.filter(purpose=purpose(year)).exists():
        return True
    province = await Unit.all().order_by("path").first()  # "43/" sorts before "43/4301/"
    if province is None or not province.leader_phone:
        log.warning("calendar alert for %s: the province unit has no leader_phone", year)
        return False
    lease = services.key("calendar_alert", str(year))
    if not await services.redis.set(lease, "1", nx=True, ex=LEASE_SECONDS):
        return False  # another process is writing it; re-checked on the next try
    try:
        if await SmsOutbox.filter(purpose=purpose(year)).exists():
            return True
        await enqueue_sms(
            services,
            phone=province.leader_phone,
            template=TEMPLATE,
            params={"year": year},
            purpose=purpose(year),
        )
        log.warning("calendar alert for %s queued to the province leader", year)
        return True
    finally:
        await services.redis.delete(lease)
