"""Reviewers (``content.review``: the supervising office and admins) release or reject held content.

A decision is final (held → released | rejected), made under the case's row lock, and appended to
the case's audit log. Released text appears where it belongs; rejected text stays stored for the
record and is shown to no one. A released supplement reaches the citizen's timeline then.
"""

from __future__ import annotations

from typing import Any

from tortoise.expressions import Subquery
from tortoise.transactions import in_transaction

from api import clock
from api.db import fits
from api.errors import Conflict, NotFound
from api.models import Case, ContentHold, Evaluation, Evidence, StaffUser, Unit
from api.models.moderation import ContentStatus
from api.services import permissions
from api.services.clocks import Conn
from api.services.moderation import FIELD_LABELS
from api.services.staff_cases import case_in_scope
from api.services.timeline import record_event
from api.services.views import staff_view

QUEUE_LIMIT = 200


async def decide(
    user: StaffUser, ticket_no: str, hold_id: int, *, release: bool, note: str
) -> dict[str, Any]:
    # Scope first (404 outside it, for every role), then the capability (403).
    case = await case_in_scope(user, ticket_no)
    permissions.require(user, permissions.CONTENT_REVIEW)
    async with in_transaction() as conn:
        case = await Case.filter(id=case.id).select_for_update().using_db(conn).get()
        hold = (
            await ContentHold.get_or_none(id=hold_id, case_id=case.id, using_db=conn)
            if hold_id > 0 and fits(ContentHold, "id", hold_id)
            else None
        )
        if hold is None:
            raise NotFound("未找到该待审内容", code="content_hold_not_found")
        if hold.status != ContentStatus.HELD:
            raise Conflict("该内容已审核", code="content_decided", details={"status": hold.status})
        status = ContentStatus.RELEASED if release else ContentStatus.REJECTED
        hold.status, hold.decided_by_id, hold.decided_at, hold.note = (
            status,
            user.id,
            clock.now(),
            note,
        )
        await hold.save(using_db=conn)
        await _apply(case, hold, conn)
        await _record(case, hold, user, conn)
    return await staff_view(case, may_review=True)


async def _apply(case: Case, hold: ContentHold, conn: Conn) -> None:
    if hold.evaluation_id is not None and hold.field == "comment":
        await (
            Evaluation.filter(id=hold.evaluation_id)
            .using_db(conn)
            .update(content_status=hold.status)
        )
    if hold.evidence_id is not None:
        await Evidence.filter(id=hold.evidence_id).using_db(conn).update(content_status=hold.status)
    pending = (
        await ContentHold.filter(case_id=case.id, status=ContentStatus.HELD).using_db(conn).exists()
    )
    case.content_status = ContentStatus.HELD if pending else hold.status
    case.version += 1
    await case.save(using_db=conn, update_fields=["content_status", "version"])


async def _record(case: Case, hold: ContentHold, user: StaffUser, conn: Conn) -> None:
    label = FIELD_LABELS.get(hold.field, hold.field)
    data = {"hold_id": hold.id, "field": hold.field, "note": hold.note}
    if hold.status == ContentStatus.RELEASED:
        await record_event(
            case,
            "content_released",
            actor="staff",
            staff_id=user.id,
            public=False,
            conn=conn,
            field=label,
            data=data,
        )
        if hold.field == "supplement":
            await record_event(case, "info_supplied_released", conn=conn, message=hold.text)
        return
    await record_event(
        case,
        "content_rejected",
        actor="staff",
        staff_id=user.id,
        public=False,
        conn=conn,
        field=label,
        note=hold.note or "无",
        data=data,
    )


async def queue(user: StaffUser) -> dict[str, Any]:
    """Held content of the cases in my scope, oldest first — where, not what (no text in lists)."""
    permissions.require(user, permissions.CONTENT_REVIEW)
    unit = await Unit.get(id=user.unit_id)
    scope = permissions.case_scope(user, unit.path)
    cases = Case.filter(scope, content_status=ContentStatus.HELD).values("id")
    holds = (
        await ContentHold.filter(status=ContentStatus.HELD, case_id__in=Subquery(cases))
        .order_by("created_at", "id")
        .limit(QUEUE_LIMIT)
        .prefetch_related("case")
    )
    return {
        "items": [
            {
                "id": h.id,
                "ticket_no": h.case.ticket_no if h.case else None,
                "field": h.field,
                "field_label": FIELD_LABELS.get(h.field, h.field),
                "reason": h.reason,
                "created_at": clock.iso(h.created_at),
            }
            for h in holds
        ]
    }
