"""The SMS sender: one claimed request at a time, its outcome recorded on the outbox row.

``SendSms`` is not idempotent, so these rules decide about every resend:

- Transient errors (throttling, per-number flow control, timeouts) are retried with exponential
  backoff; permanent ones (bad number, template errors) end in ``failed`` with ``last_error``.
- An attempt whose outcome is unknown (worker killed mid-request, answer lost) may have been taken
  by Aliyun: the row is resent once, with the same ``OutId`` so the two can be reconciled, and
  never again; a second unknown outcome leaves it ``unconfirmed``. ``failed`` therefore always
  means that Aliyun took none of the requests.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

from api import clock
from api.db import column
from api.integrations.sms import SmsResult
from api.models import Case, SmsOutbox
from api.models.outbox import OutboxStatus
from api.services.context import Services
from api.services.outbox import DIGEST_TEMPLATE, after_quiet_hours
from api.sla.policy import QuietHours
from api.workers.sms_claims import claim_next, release_merged, settle

log = logging.getLogger("pingyi.outbox")

MAX_ATTEMPTS = 8


def _backoff(attempts: int) -> timedelta:
    # Jitter spreads rows throttled together, so they do not all come back in the same second.
    base = min(15 * 2 ** (attempts - 1), 3600)
    return timedelta(seconds=base * (1 + random.random() / 5))


def _outcome(
    services: Services, row: SmsOutbox, result: SmsResult, now: datetime, quiet: QuietHours
) -> dict[str, Any]:
    if result.ok:
        return {
            "status": OutboxStatus.SENT,
            "sent_at": now,
            "biz_id": result.biz_id,
            "lease_until": None,
            "last_error": None,
        }
    fields: dict[str, Any] = {
        "lease_until": None,
        "last_error": f"{result.code}: {result.message}"[:200],
    }
    if result.maybe_delivered:
        row.uncertain_attempts += 1
        fields["uncertain_attempts"] = row.uncertain_attempts
        if row.uncertain_attempts > 1:
            return {**fields, "status": OutboxStatus.UNCONFIRMED}
    if result.transient and row.attempts < MAX_ATTEMPTS:
        retry_at = now + _backoff(row.attempts)
        if not row.urgent:
            retry_at = after_quiet_hours(retry_at, quiet)
        return {**fields, "status": OutboxStatus.PENDING, "next_attempt_at": retry_at}
    # Giving up: "failed" only when no attempt may have reached Aliyun.
    final = OutboxStatus.UNCONFIRMED if row.uncertain_attempts else OutboxStatus.FAILED
    return {**fields, "status": final}


def _refused_digest(row: SmsOutbox, fields: dict[str, Any], result: SmsResult) -> bool:
    # A bad number fails each reminder as surely as the digest; anything else may be the digest's.
    return (
        row.template == DIGEST_TEMPLATE
        and fields["status"] == OutboxStatus.FAILED
        and result.code != "isv.MOBILE_NUMBER_ILLEGAL"
    )


async def _quiet_hours(services: Services, row: SmsOutbox, result: SmsResult) -> QuietHours:
    """A routine retry waits out the quiet hours of its case's own profile (the current profile's
    for SMS without a case); looked up only when a retry is due."""
    if result.ok or not result.transient or row.urgent or row.case_id is None:
        return services.policy.quiet_hours
    names = await column(Case.filter(id=row.case_id), "sla_profile")
    return services.profile(names[0]).quiet_hours if names else services.policy.quiet_hours


async def _record(services: Services, row: SmsOutbox, result: SmsResult) -> None:
    quiet = await _quiet_hours(services, row, result)
    fields = _outcome(services, row, result, clock.now(), quiet)
    ours = SmsOutbox.filter(id=row.id, status=OutboxStatus.SENDING, attempts=row.attempts)
    async with in_transaction() as conn:
        done = await settle(ours, row.id, fields, conn)
        if done and _refused_digest(row, fields, result):
            await release_merged(row.id, f"digest {fields['last_error']}", conn)
        if not done and result.ok:
            # An OK is the truth even when our lease ran out and another worker took the row.
            open_row = SmsOutbox.filter(id=row.id).exclude(
                status__in=(OutboxStatus.SENT, OutboxStatus.FAILED)
            )
            done = await settle(open_row, row.id, fields, conn)
    if not done:
        log.warning("sms %s: lease lost before the answer (%s)", row.out_id, result.code)


async def _deliver(services: Services, row: SmsOutbox) -> SmsResult:
    template = services.sms_templates.get(row.template)
    result = await services.sms.send(
        phone=row.phone,
        template_code=template.code if template else row.template,
        params={k: str(v) for k, v in row.params.items()},
        out_id=row.out_id,
    )
    if not result.ok:
        log.warning("sms %s to %s: %s %s", row.out_id, row.phone[-4:], result.code, result.message)
    return result


async def send_due_sms(services: Services, *, limit: int = 50) -> int:
    """Sends up to ``limit`` due requests, claiming each just before it goes out."""
    sent = 0
    for _ in range(limit):
        row, progressed = await claim_next(services)
        if row is None:
            if progressed:
                continue  # rows were held back or settled: others may be due behind them
            break
        result = await _deliver(services, row)
        await _record(services, row, result)
        sent += 1
        if result.code.startswith("Throttling"):
            break  # the account is throttled: the next requests would be too
    return sent
