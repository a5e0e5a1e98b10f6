"""Province administration: the SMS outbox as it stands."""

from __future__ import annotations

from typing import Any

from api import clock
from api.models import Case, SmsOutbox, StaffUser
from api.services import permissions
from api.services.context import Services
from api.services.lifecycle import is_ticket_no


def _render(text: str, params: dict[str, Any]) -> str:
    for key, value in params.items():
        text = text.replace("${" + key + "}", str(value))
    return text


async def sms_list(
    services: Services,
    user: StaffUser,
    *,
    status: str | None,
    ticket_no: str | None,
    limit: int,
    before: int | None = None,
) -> dict[str, Any]:
    """Newest first; ``next_cursor`` (an outbox id) fetches the page after this one."""
    permissions.require(user, permissions.SMS_VIEW)
    query = SmsOutbox.all()
    if before is not None:
        query = query.filter(id__lt=before)
    if status:
        query = query.filter(status=status)
    if ticket_no:
        case = await Case.get_or_none(ticket_no=ticket_no) if is_ticket_no(ticket_no) else None
        query = query.filter(case_id=case.id if case else -1)
    rows = await query.order_by("-id").limit(limit)
    tickets = dict(
        await Case.filter(id__in={r.case_id for r in rows if r.case_id}).values_list(
            "id", "ticket_no"
        )
    )
    templates = services.sms_templates
    return {
        "items": [
            {
                "id": r.id,
                "phone": r.phone,
                "template": r.template,
                "template_code": templates[r.template].code if r.template in templates else None,
                "text": _render(templates[r.template].text, r.params)
                if r.template in templates
                else None,
                "params": r.params,
                "purpose": r.purpose,
                "urgent": r.urgent,
                "ticket_no": tickets.get(r.case_id),
                "status": r.status,
                "attempts": r.attempts,
                "uncertain_attempts": r.uncertain_attempts,
                "merged_into": r.merged_into_id,
                "out_id": r.out_id,
                "biz_id": r.biz_id,
                "last_error": r.last_error,
                "created_at": clock.iso(r.created_at),
                "sent_at": clock.iso(r.sent_at),
            }
            for r in rows
        ],
        "next_cursor": str(rows[-1].id) if len(rows) == limit else None,
    }
