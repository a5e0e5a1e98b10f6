"""WeChat subscribe messages to the citizen who filed a case (订阅消息).

The mini-program asks with ``wx.requestSubscribeMessage``; each template the citizen accepts is one
consent, good for one message (WeChat's one-time subscription). A state change of the case
(签收, 答复, 复核, 办结) uses up one of the citizen's consents and writes an outbox row in the same
transaction; the worker (``api.workers.wechat_sender``) renders and sends it after commit. Without
a consent nothing is queued: the citizen follows the case in the mini-program.

The message goes to the case's own citizen only and says what the citizen's timeline says: the
case number, what happened, the handling unit, when, and — for a named reporter — the opening words
of the reply. Never an officer's or a staff member's name, never anything about other citizens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from api import clock
from api.errors import Conflict, NotFound
from api.models import Case, Citizen, SubscribeConsent, Unit, WeChatOutbox
from api.models.case import CaseStatus
from api.models.subscribe import ConsentStatus
from api.schemas.subscribe import SubscriptionCreate
from api.services.context import Services
from api.services.subscribe_config import SubscribeTemplate, clamp, time_value
from api.texts import KINDS
from api.validation import field_error

# Consents kept per citizen and template: enough for every change of several open cases, and a
# bound on what a client posting in a loop can store.
MAX_AVAILABLE = 20
# Whose reply the remark may quote, per event.
_REPLY_OF = {"replied": "reply_message", "recheck_replied": "recheck_reply_message"}


@dataclass(frozen=True)
class SubscribeMessage:
    openid: str
    template_id: str
    data: dict[str, dict[str, str]]
    page: str


def templates(services: Services) -> dict[str, Any]:
    """What the mini-program passes to wx.requestSubscribeMessage (``tmplIds``)."""
    config = services.subscribe
    return {
        "template_ids": [t.id for t in config.templates],
        "templates": [
            {"id": t.id, "title": t.title, "events": list(t.events)} for t in config.templates
        ],
    }


async def _own_open_case(citizen: Citizen, ticket_no: str, conn: BaseDBAsyncClient) -> Case:
    case = await Case.get_or_none(ticket_no=ticket_no, citizen_id=citizen.id, using_db=conn)
    if case is None:
        raise NotFound("未找到该案件", code="case_not_found")
    if case.status == CaseStatus.CLOSED:
        raise Conflict("案件已办结，无需再订阅进度通知", code="case_closed")
    return case


async def record_consents(
    services: Services, citizen: Citizen, body: SubscriptionCreate
) -> dict[str, Any]:
    """Stores the templates the citizen accepted, one consent each."""
    known = {t.id for t in services.subscribe.templates}
    if unknown := [t for t in body.template_ids if t not in known]:
        raise field_error("template_ids", f"未知的订阅消息模板：{'、'.join(unknown)}")
    now = clock.now()
    async with in_transaction() as conn:
        # The citizen row lock serialises two posts, so the cap below holds.
        await Citizen.filter(id=citizen.id).select_for_update().using_db(conn)
        case = await _own_open_case(citizen, body.ticket_no, conn) if body.ticket_no else None
        counts = []
        for template_id in body.template_ids:
            mine = SubscribeConsent.filter(
                citizen_id=citizen.id, template_id=template_id, status=ConsentStatus.AVAILABLE
            ).using_db(conn)
            available = await mine.count()
            if available < MAX_AVAILABLE:
                await SubscribeConsent.create(
                    citizen_id=citizen.id,
                    case_id=case.id if case else None,
                    template_id=template_id,
                    created_at=now,
                    using_db=conn,
                )
                available += 1
            counts.append({"template_id": template_id, "available": available})
    return {"ticket_no": body.ticket_no, "templates": counts}


async def _take_consent(
    case: Case, template_ids: list[str], now: datetime, conn: BaseDBAsyncClient
) -> SubscribeConsent | None:
    """One available consent of the case's citizen: one given on this case first, then a general
    one; oldest first. Rows another transaction is taking are skipped, never waited for."""
    for scope in (Q(case_id=case.id), Q(case_id__isnull=True)):
        found = (
            await SubscribeConsent.filter(
                scope,
                citizen_id=case.citizen_id,
                template_id__in=template_ids,
                status=ConsentStatus.AVAILABLE,
            )
            .order_by("id")
            .limit(1)
            .select_for_update(skip_locked=True)
            .using_db(conn)
        )
        for consent in found:
            taken = (
                await SubscribeConsent.filter(id=consent.id, status=ConsentStatus.AVAILABLE)
                .using_db(conn)
                .update(status=ConsentStatus.USED, used_at=now)
            )
            if taken:
                return consent
    return None


async def notify_citizen(
    services: Services | None, case: Case, event: str, *, conn: BaseDBAsyncClient
) -> WeChatOutbox | None:
    """Queues the subscribe message for ``event`` in the caller's transaction, if the citizen
    gave a consent for a template that tells of it. ``services`` None: a bare script, no message."""
    if services is None:
        return None
    template_ids = services.subscribe.ids_for(event)
    if not template_ids:
        return None
    now = clock.now()
    consent = await _take_consent(case, template_ids, now, conn)
    if consent is None:
        return None
    return await WeChatOutbox.create(
        case_id=case.id,
        citizen_id=case.citizen_id,
        consent_id=consent.id,
        template_id=consent.template_id,
        event=event,
        event_at=now,
        next_attempt_at=now,
        created_at=now,
        using_db=conn,
    )


def _remark(services: Services, case: Case, event: str) -> str:
    # A named reporter reads the opening words of the reply, as it reads now; an anonymous one
    # only the fixed text (a message shows on the lock screen).
    attribute = _REPLY_OF.get(event)
    reply = getattr(case, attribute) if attribute and not case.anonymous else None
    if reply and reply.strip():
        return str(reply)
    return services.subscribe.events[event].remark


async def _values(services: Services, case: Case, row: WeChatOutbox) -> dict[str, str]:
    unit = await Unit.get(id=case.handling_unit_id)
    return {
        "ticket": case.ticket_no,
        "status": services.subscribe.events[row.event].status,
        "unit": unit.name,
        "time": time_value(row.event_at),
        "kind": KINDS.get(case.kind, case.kind),
        "remark": _remark(services, case, row.event),
    }


def _data(template: SubscribeTemplate, values: dict[str, str]) -> dict[str, dict[str, str]]:
    return {key: {"value": clamp(key, values[source])} for key, source in template.fields.items()}


async def render(services: Services, row: WeChatOutbox) -> SubscribeMessage | None:
    """The message for an outbox row, from the case as it is now; None when it can no longer be
    sent (the case or its template is gone)."""
    template = services.subscribe.by_id(row.template_id)
    case = await Case.get_or_none(id=row.case_id)
    citizen = await Citizen.get_or_none(id=row.citizen_id)
    if template is None or case is None or citizen is None or case.citizen_id != citizen.id:
        return None
    page = services.subscribe.page.replace("{ticket}", case.ticket_no)
    data = _data(template, await _values(services, case, row))
    return SubscribeMessage(openid=citizen.openid, template_id=template.id, data=data, page=page)
