"""The SMS outbox: rows written with what caused them, sent by the worker after commit."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from api import clock
from api.integrations.sms import SmsResult, clamp_params
from api.models import SmsOutbox
from api.models.outbox import OutboxStatus
from api.services.clocks import Conn
from api.services.context import Services
from api.sla.policy import QuietHours

log = logging.getLogger("pingyi.outbox")

MAX_ATTEMPTS = 8


def after_quiet_hours(at: datetime, quiet: QuietHours) -> datetime:
    """The first moment at or after ``at`` outside quiet hours (no routine SMS at night)."""
    local = clock.to_china(at)
    if not quiet.contains(local.time()):
        return at
    end = local.replace(hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0)
    return end if end > local else end + timedelta(days=1)


async def enqueue_sms(
    services: Services,
    *,
    phone: str,
    template: str,
    params: dict[str, object],
    purpose: str,
    urgent: bool = False,
    case_id: int | None = None,
    step_id: int | None = None,
    conn: Conn = None,
) -> SmsOutbox:
    now = clock.now()
    send_at = now if urgent else after_quiet_hours(now, services.policy.quiet_hours)
    return await SmsOutbox.create(
        phone=phone,
        template=template,
        params=clamp_params(params),
        purpose=purpose,
        urgent=urgent,
        case_id=case_id,
        step_id=step_id,
        next_attempt_at=send_at,
        out_id=f"py{uuid.uuid4().hex[:24]}",
        created_at=now,
        using_db=conn,
    )


async def _claim(services: Services, limit: int) -> list[SmsOutbox]:
    """Takes due rows under a lease; a row whose sender died is taken again when its lease ends."""
    now = clock.now()
    lease = now + timedelta(seconds=services.settings.sms_lease_seconds)
    async with in_transaction() as conn:
        rows = (
            await SmsOutbox.filter(
                Q(status=OutboxStatus.PENDING, next_attempt_at__lte=now)
                | Q(status=OutboxStatus.SENDING, lease_until__lte=now)
            )
            .order_by("next_attempt_at", "id")
            .limit(limit)
            .select_for_update(skip_locked=True)
            .using_db(conn)
        )
        claimed = []
        for row in rows:
            updated = (
                await SmsOutbox.filter(id=row.id, status=row.status, attempts=row.attempts)
                .using_db(conn)
                .update(status=OutboxStatus.SENDING, lease_until=lease, attempts=F("attempts") + 1)
            )
            if updated:
                row.attempts += 1
                claimed.append(row)
    return claimed


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(15 * 2 ** (attempts - 1), 3600))


async def _record(row: SmsOutbox, result: SmsResult) -> None:
    now = clock.now()
    fields: dict[str, object] = {
        "last_error": None if result.ok else f"{result.code}: {result.message}"[:200]
    }
    if result.ok:
        fields.update(status=OutboxStatus.SENT, sent_at=now, biz_id=result.biz_id, lease_until=None)
    elif result.transient and row.attempts < MAX_ATTEMPTS:
        fields.update(
            status=OutboxStatus.PENDING,
            next_attempt_at=now + _backoff(row.attempts),
            lease_until=None,
        )
    else:
        fields.update(status=OutboxStatus.FAILED, lease_until=None)
    await SmsOutbox.filter(id=row.id, status=OutboxStatus.SENDING).update(**fields)


async def send_due_sms(services: Services, *, limit: int = 50) -> int:
    rows = await _claim(services, limit)
    templates = {t.key: t.code for t in services.sms_templates.values()}
    for row in rows:
        result = await services.sms.send(
            phone=row.phone,
            template_code=templates.get(row.template, row.template),
            params={k: str(v) for k, v in row.params.items()},
            out_id=row.out_id,
        )
        if not result.ok:
            log.warning(
                "sms %s to %s: %s %s", row.out_id, row.phone[-4:], result.code, result.message
            )
        await _record(row, result)
    return len(rows)
