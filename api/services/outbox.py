"""The SMS outbox: rows written in the same transaction as what caused them, sent after commit
by the worker (``api.workers.sms_sender``), which decides about every resend."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from api import clock
from api.integrations.sms import clamp_params
from api.models import SmsOutbox
from api.services.clocks import Conn
from api.services.context import Services
from api.sla.policy import QuietHours, SlaPolicy

DIGEST_TEMPLATE = "digest"  # config/sms.toml: several reminders for one phone in one SMS


def after_quiet_hours(at: datetime, quiet: QuietHours) -> datetime:
    """The first moment at or after ``at`` outside quiet hours (no routine SMS at night)."""
    local = clock.to_china(at)
    if not quiet.contains(local.time()):
        return at
    end = local.replace(hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0)
    return end if end > local else end + timedelta(days=1)


def new_out_id() -> str:
    """A fresh ``OutId``: 96 random bits (a burst makes 20,000 of them at once)."""
    return f"py{secrets.token_hex(12)}"


async def enqueue_sms(
    services: Services,
    *,
    phone: str,
    template: str,
    params: dict[str, object],
    purpose: str,
    urgent: bool = False,
    policy: SlaPolicy | None = None,
    case_id: int | None = None,
    step_id: int | None = None,
    conn: Conn = None,
) -> SmsOutbox:
    now = clock.now()
    # Quiet hours of the case's own profile when given, else the current one.
    quiet = (policy or services.policy).quiet_hours
    send_at = now if urgent else after_quiet_hours(now, quiet)
    return await SmsOutbox.create(
        phone=phone,
        template=template,
        params=clamp_params(params),
        purpose=purpose,
        urgent=urgent,
        case_id=case_id,
        step_id=step_id,
        next_attempt_at=send_at,
        out_id=new_out_id(),
        created_at=now,
        using_db=conn,
    )
