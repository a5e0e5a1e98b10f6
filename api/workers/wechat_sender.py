"""The subscribe message sender: claims one outbox row at a time, renders it from the case as it
is now, sends it through the shared access token and records the outcome on the row.

- 43101 (the user refused, or WeChat holds no consent left): ``refused``, the consent ``spent``
  together with the citizen's other stored consents for that template (WeChat is the truth); never
  retried.
- 40003 (invalid openid), 47003 (a value WeChat refuses), 40037, 41030 and other errors: ``failed``
  at once.
- -1 (busy, network, timeout) and the frequency limits (45009, 45011): retried with backoff, at
  most ``MAX_ATTEMPTS`` attempts. 40001/42001 are retried once by the gateway with a refreshed
  shared token; if that fails too, the row is retried later like a busy answer.

Each row is claimed under a lease (``FOR UPDATE SKIP LOCKED`` plus a conditional update), so two
workers never send one row; a lease outlives the longest a send can take, and once a row is
``sent``, ``refused`` or ``failed`` nothing claims it again.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from typing import Any

from tortoise.expressions import Q
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from api import clock
from api.integrations.wechat import WeChatError
from api.models import SubscribeConsent, WeChatOutbox
from api.models.subscribe import ConsentStatus, MessageStatus
from api.services.context import Services
from api.services.subscriptions import render

log = logging.getLogger("pingyi.wechat_outbox")

MAX_ATTEMPTS = 6
CANDIDATES = 10
REFUSED = 43101
# Busy, network/timeout, frequency limits, and a token still refused after the gateway's refresh.
TRANSIENT = frozenset({-1, 45009, 45011, 40001, 40014, 42001})
THROTTLED = frozenset({45009, 45011})
GONE = -2  # our own code: the case, its citizen or its template no longer exists


def _lease(services: Services, now: datetime) -> datetime:
    # A send may take a token refresh and one retry: four requests of ``wechat_timeout`` (+1 s).
    settings = services.settings
    longest = 4 * (settings.wechat_timeout + 1)
    return now + timedelta(seconds=max(settings.wechat_lease_seconds, longest))


def _backoff(attempts: int) -> timedelta:
    base = min(15 * 2 ** (attempts - 1), 3600)
    return timedelta(seconds=base * (1 + random.random() / 5))


def due_messages(now: datetime) -> QuerySet[WeChatOutbox]:
    """Rows due now and claims whose lease ended, oldest first, skipping rows others hold."""
    return (
        WeChatOutbox.filter(
            Q(status=MessageStatus.PENDING, next_attempt_at__lte=now)
            | Q(status=MessageStatus.SENDING, lease_until__lte=now)
        )
        .order_by("next_attempt_at", "id")
        .limit(CANDIDATES)
        .select_for_update(skip_locked=True)
    )


async def claim_next(services: Services) -> WeChatOutbox | None:
    now = clock.now()
    lease = _lease(services, now)
    async with in_transaction() as conn:
        for row in await due_messages(now).using_db(conn):
            if row.attempts >= MAX_ATTEMPTS:  # its worker died on the last attempt
                await _settle(row, _gave_up(row, "lease expired on the last attempt"), conn)
                continue
            claimed = (
                await WeChatOutbox.filter(id=row.id, status=row.status, attempts=row.attempts)
                .using_db(conn)
                .update(status=MessageStatus.SENDING, lease_until=lease, attempts=row.attempts + 1)
            )
            if claimed:
                row.status, row.lease_until, row.attempts = (
                    MessageStatus.SENDING,
                    lease,
                    row.attempts + 1,
                )
                return row
    return None


def _gave_up(row: WeChatOutbox, error: str) -> dict[str, Any]:
    return {"status": MessageStatus.FAILED, "lease_until": None, "last_error": error[:200]}


def _outcome(row: WeChatOutbox, error: WeChatError | None, msgid: str) -> dict[str, Any]:
    now = clock.now()
    if error is None:
        return {
            "status": MessageStatus.SENT,
            "sent_at": now,
            "msgid": msgid[:40] or None,
            "lease_until": None,
            "errcode": None,
            "last_error": None,
        }
    fields: dict[str, Any] = {
        "lease_until": None,
        "errcode": error.errcode,
        "last_error": f"{error.errcode}: {error.errmsg}"[:200],
    }
    if error.errcode == REFUSED:
        return {**fields, "status": MessageStatus.REFUSED}
    if error.errcode in TRANSIENT and row.attempts < MAX_ATTEMPTS:
        retry_at = now + _backoff(row.attempts)
        return {**fields, "status": MessageStatus.PENDING, "next_attempt_at": retry_at}
    return {**fields, "status": MessageStatus.FAILED}


async def _settle(row: WeChatOutbox, fields: dict[str, Any], conn: Any) -> bool:
    ours = WeChatOutbox.filter(id=row.id, status=MessageStatus.SENDING, attempts=row.attempts)
    if not await ours.using_db(conn).update(**fields):
        return False
    if fields["status"] == MessageStatus.REFUSED:
        # WeChat holds no consent for this template: ours (stored earlier) are spent as well.
        spent = Q(id=row.consent_id) | Q(
            citizen_id=row.citizen_id,
            template_id=row.template_id,
            status=ConsentStatus.AVAILABLE,
        )
        await SubscribeConsent.filter(spent).using_db(conn).update(status=ConsentStatus.SPENT)
    return True


async def _record(row: WeChatOutbox, error: WeChatError | None, msgid: str) -> None:
    fields = _outcome(row, error, msgid)
    async with in_transaction() as conn:
        done = await _settle(row, fields, conn)
        if not done and error is None:
            # A sent message is the truth even when our lease ran out meanwhile.
            open_row = WeChatOutbox.filter(id=row.id).exclude(status__in=MessageStatus.FINAL)
            done = bool(await open_row.using_db(conn).update(**fields))
    if not done:
        log.warning("wechat message %s: lease lost before the answer", row.id)


async def _deliver(services: Services, row: WeChatOutbox) -> tuple[WeChatError | None, str]:
    message = await render(services, row)
    if message is None:
        return WeChatError(GONE, "case, citizen or template no longer exists"), ""
    config = services.subscribe
    try:
        msgid = await services.wechat.send_subscribe_message(
            openid=message.openid,
            template_id=message.template_id,
            data=message.data,
            page=message.page,
            miniprogram_state=config.miniprogram_state,
            lang=config.lang,
        )
    except WeChatError as exc:
        log.warning("wechat message %s (%s): %s", row.id, row.event, exc)
        return exc, ""
    return None, msgid


async def send_due_wechat(services: Services, *, limit: int = 50) -> int:
    """Sends up to ``limit`` due subscribe messages, claiming each just before it goes out."""
    sent = 0
    for _ in range(limit):
        row = await claim_next(services)
        if row is None:
            break
        error, msgid = await _deliver(services, row)
        await _record(row, error, msgid)
        sent += 1
        if error is not None and error.errcode in THROTTLED:
            break  # the account's quota is spent for now: the next sends would be too
    return sent
