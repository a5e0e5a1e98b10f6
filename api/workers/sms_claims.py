"""Which SMS goes out next: claims under a lease, taking back the claims of dead workers, and
digests (escalation reminders due for one phone merged into one SMS, at most one reminder SMS per
phone per ``sms_digest_seconds``; 0 turns digests off). Urgent SMS are never merged nor held.

Several workers may claim at once: due rows are locked with ``FOR UPDATE SKIP LOCKED`` and each
phone's digest window is opened under a transaction-scoped advisory lock.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from api import clock
from api.integrations.sms import PARAM_LIMIT, clamp_params
from api.models import SmsOutbox
from api.models.outbox import OutboxStatus
from api.services.context import Services
from api.services.outbox import DIGEST_TEMPLATE, after_quiet_hours, new_out_id

log = logging.getLogger("pingyi.outbox")

CANDIDATES = 20  # due rows looked at per claim
MAX_DIGEST = 10_000  # reminders one digest may carry (the SMS only counts them)
UNCONFIRMED_ERROR = "结果未知：可能已送达，不再重发（按 OutId 核对）"


def _lease(services: Services, now: datetime) -> datetime:
    # A lease shorter than one request (connect + read timeout) would let another worker resend
    # a message whose answer is still on its way.
    settings = services.settings
    return now + timedelta(seconds=max(settings.sms_lease_seconds, 2 * settings.sms_timeout))


def _digest_on(services: Services) -> bool:
    return services.settings.sms_digest_seconds > 0 and DIGEST_TEMPLATE in services.sms_templates


def _fresh_reminders(phone: str) -> Q:
    """Escalation reminders to ``phone`` never tried yet: the only rows a digest may merge."""
    return Q(
        phone=phone, status=OutboxStatus.PENDING, attempts=0, urgent=False, step_id__isnull=False
    )


def _is_fresh_reminder(row: SmsOutbox) -> bool:
    return row.status == OutboxStatus.PENDING and (
        row.attempts == 0 and not row.urgent and row.step_id is not None
    )


async def _lock_phone(phone: str, conn: BaseDBAsyncClient) -> bool:
    """One claimer per phone at a time, so two workers cannot both open its digest window."""
    if conn.capabilities.dialect != "postgres":
        return True  # SQLite: the embedded default runs one worker
    rows = await conn.execute_query_dict(
        "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS ok", [f"sms:{phone}"]
    )
    return bool(rows[0]["ok"])


async def _window_end(
    services: Services, phone: str, *, now: datetime, conn: BaseDBAsyncClient
) -> datetime | None:
    """When the phone's current digest window closes, or None when it may be sent to now."""
    last = (
        await SmsOutbox.filter(
            Q(step_id__isnull=False) | Q(template=DIGEST_TEMPLATE),
            phone=phone,
            urgent=False,
            merged_into_id__isnull=True,
            claimed_at__isnull=False,
        )
        .exclude(status=OutboxStatus.FAILED)
        .order_by("-claimed_at")
        .using_db(conn)
        .first()
    )
    if last is None or last.claimed_at is None:
        return None
    end = last.claimed_at + timedelta(seconds=services.settings.sms_digest_seconds)
    return after_quiet_hours(end, services.policy.quiet_hours) if end > now else None


async def _hold_until(phone: str, until: datetime, conn: BaseDBAsyncClient) -> None:
    rows = (
        await SmsOutbox.filter(_fresh_reminders(phone), next_attempt_at__lt=until)
        .select_for_update(skip_locked=True)
        .using_db(conn)
    )
    if rows:
        await (
            SmsOutbox.filter(id__in=[r.id for r in rows])
            .using_db(conn)
            .update(next_attempt_at=until)
        )


async def _claim(
    row: SmsOutbox, *, now: datetime, lease: datetime, conn: BaseDBAsyncClient
) -> SmsOutbox | None:
    updated = (
        await SmsOutbox.filter(id=row.id, status=row.status, attempts=row.attempts)
        .using_db(conn)
        .update(
            status=OutboxStatus.SENDING,
            lease_until=lease,
            attempts=row.attempts + 1,
            uncertain_attempts=row.uncertain_attempts,
            claimed_at=row.claimed_at or now,
        )
    )
    if not updated:
        return None
    row.status, row.lease_until, row.attempts = OutboxStatus.SENDING, lease, row.attempts + 1
    row.claimed_at = row.claimed_at or now
    return row


def _ticket_list(rows: list[SmsOutbox]) -> str:
    """As many whole ticket numbers as fit one template variable (the SMS says "等")."""
    tickets = dict.fromkeys(str(r.params.get("ticket", "")) for r in rows)
    text = ""
    for ticket in filter(None, tickets):
        joined = f"{text}、{ticket}" if text else ticket
        if len(joined) > PARAM_LIMIT:
            break
        text = joined
    return text


async def _claim_digest(
    rows: list[SmsOutbox], *, now: datetime, lease: datetime, conn: BaseDBAsyncClient
) -> SmsOutbox:
    digest = await SmsOutbox.create(
        phone=rows[0].phone,
        template=DIGEST_TEMPLATE,
        params=clamp_params({"count": len(rows), "tickets": _ticket_list(rows)}),
        purpose=DIGEST_TEMPLATE,
        status=OutboxStatus.SENDING,
        attempts=1,
        lease_until=lease,
        claimed_at=now,
        next_attempt_at=now,
        out_id=new_out_id(),
        created_at=now,
        using_db=conn,
    )
    # The reminders ride on the digest: no lease of their own, settled with it.
    await (
        SmsOutbox.filter(id__in=[r.id for r in rows])
        .using_db(conn)
        .update(status=OutboxStatus.SENDING, merged_into_id=digest.id, claimed_at=now)
    )
    return digest


async def settle(
    query: QuerySet[SmsOutbox], row_id: int, fields: dict[str, Any], conn: BaseDBAsyncClient
) -> bool:
    """Writes an outcome on a row if ``query`` still matches it and, once final, on the
    reminders merged into it."""
    if not await query.using_db(conn).update(**fields):
        return False
    if fields["status"] != OutboxStatus.PENDING:  # a digest being retried keeps its reminders
        shared = ("status", "sent_at", "biz_id", "last_error")
        await (
            SmsOutbox.filter(merged_into_id=row_id)
            .using_db(conn)
            .update(**{k: v for k, v in fields.items() if k in shared})
        )
    return True


async def release_merged(digest_id: int, reason: str, conn: BaseDBAsyncClient) -> None:
    """A digest Aliyun refused (e.g. its template is not approved yet): its reminders go out one
    by one instead. ``attempts=1`` keeps them from being merged, or held, again."""
    await (
        SmsOutbox.filter(merged_into_id=digest_id)
        .using_db(conn)
        .update(
            status=OutboxStatus.PENDING,
            merged_into_id=None,
            attempts=1,
            next_attempt_at=clock.now(),
            last_error=reason[:200],
        )
    )


async def _take_back(
    row: SmsOutbox, *, now: datetime, lease: datetime, conn: BaseDBAsyncClient
) -> SmsOutbox | bool:
    """A claim whose lease ended: its worker died, perhaps with the request already at Aliyun."""
    if row.uncertain_attempts >= 1:
        fields = {
            "status": OutboxStatus.UNCONFIRMED,
            "lease_until": None,
            "last_error": UNCONFIRMED_ERROR,
        }
        await settle(SmsOutbox.filter(id=row.id), row.id, fields, conn)
        log.warning("sms %s: outcome unknown twice, not resent", row.out_id)
        return True
    row.uncertain_attempts += 1
    return await _claim(row, now=now, lease=lease, conn=conn) or False


async def _take(
    services: Services, row: SmsOutbox, *, now: datetime, conn: BaseDBAsyncClient
) -> SmsOutbox | bool:
    """The row (or digest) claimed for sending; else whether the row was settled or held."""
    lease = _lease(services, now)
    if row.status == OutboxStatus.SENDING:
        return await _take_back(row, now=now, lease=lease, conn=conn)
    if not (_is_fresh_reminder(row) and _digest_on(services)):
        return await _claim(row, now=now, lease=lease, conn=conn) or False
    if not await _lock_phone(row.phone, conn):
        return False  # another worker is claiming for this phone right now
    hold = await _window_end(services, row.phone, now=now, conn=conn)
    if hold is not None:
        await _hold_until(row.phone, hold, conn)
        return True
    rows = (
        await SmsOutbox.filter(_fresh_reminders(row.phone), next_attempt_at__lte=now)
        .order_by("next_attempt_at", "id")
        .limit(MAX_DIGEST)
        .select_for_update(skip_locked=True)
        .using_db(conn)
    )
    if len(rows) < 2:
        return await _claim(row, now=now, lease=lease, conn=conn) or False
    return await _claim_digest(rows, now=now, lease=lease, conn=conn)


def due_rows(now: datetime) -> QuerySet[SmsOutbox]:
    """Rows due now and claims whose lease ended, oldest first, skipping rows others hold."""
    return (
        SmsOutbox.filter(
            Q(status=OutboxStatus.PENDING, next_attempt_at__lte=now)
            | Q(status=OutboxStatus.SENDING, lease_until__lte=now)
        )
        .order_by("next_attempt_at", "id")
        .limit(CANDIDATES)
        .select_for_update(skip_locked=True)
    )


async def claim_next(services: Services) -> tuple[SmsOutbox | None, bool]:
    """Claims the next request to make; else tells whether due rows were held or settled."""
    now = clock.now()
    progressed = False
    async with in_transaction() as conn:
        rows = await due_rows(now).using_db(conn)
        for row in rows:
            taken = await _take(services, row, now=now, conn=conn)
            if isinstance(taken, SmsOutbox):
                return taken, True
            progressed = progressed or taken
    return None, progressed
